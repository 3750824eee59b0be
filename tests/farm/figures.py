"""The farm tier's figures as a Markdown table, one column a run, from the results files that
``tests/farm/run --results FILE`` writes: ``python -m tests.farm.figures FILE...``. The
table in docs/farm.md is this command's output, and the docs' tests hold the two equal.
"""

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

#: What a results file says of its run rather than of the farm: the column's heading.
RUN_KEYS = ("started", "commit", "clean", "changed", "kernel")


def load(path: str) -> dict[str, Any]:
    """Given a results file's path, return its figures.

    Raises:
        OSError, ValueError: the file cannot be read or is no JSON object.
    """
    with open(path, encoding="utf-8") as handle:
        figures = json.load(handle)
    if not isinstance(figures, dict):
        raise ValueError(f"{path}: not a results file of the farm tier (no JSON object)")
    return figures


def heading(run: Mapping[str, Any]) -> str:
    """Given a run's figures, return its column's heading: its nodes, date and commit."""
    commit = run.get("commit")
    source = f"`{commit[:7]}`" if commit else "commit not recorded"
    if run.get("clean") is False:
        source += " (changed tree)"
    started = run.get("started")
    date = str(started)[:10] if started else "date not recorded"
    return f"{run.get('nodes', '?')} nodes, {date}, {source}"


def cell(value: Any) -> str:
    """Given a figure, return it as a table cell: a mapping (one figure a node) as
    ``name: figure`` pairs, a list as its items."""
    if isinstance(value, Mapping):
        return "; ".join(f"{name}: {cell(item)}" for name, item in value.items())
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    return "not measured" if value is None else str(value)


def table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Given the figures of some runs, return the Markdown table of them, a row for each
    figure that any run has (by name), a column for each run."""
    names = sorted({name for run in runs for name in run if name not in RUN_KEYS})
    lines = ["| what | " + " | ".join(heading(run) for run in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(run.get(name)) for run in runs) + " |" for name in names]
    return "\n".join(lines)


def main(arguments: Sequence[str] | None = None) -> int:
    """Print the table of the results files given on the command line; exit 1 when one
    cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m tests.farm.figures", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="FILE", help="results files of tests/farm/run --results")
    options = parser.parse_args(arguments)
    try:
        runs = [load(path) for path in options.files]
    except (OSError, ValueError) as error:
        print(f"python -m tests.farm.figures: {error}", file=sys.stderr)
        return 1
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
