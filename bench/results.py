"""What a results file holds, and the tables printed from it.

A results file (``bench/results.json``) keeps the latest figures of every scenario, each with
the run that measured it: the commit of the checkout, whether its tree was clean, the date,
the command, the machine and its load. A run of some scenarios (``--only``) replaces theirs
and keeps the others' as they were, so that every figure keeps the provenance of the run
that measured it. Files written before runs were recorded (a single run at the top level)
are read as one run whose commit was not recorded.

Only :func:`source_of` and :func:`load` touch the world (git and the file); the rest is pure.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench.stats import Figure

#: The layout of results files this module writes; files without one hold a single run.
FORMAT = 2
#: Changed files listed in a run's record at most (the rest are counted).
CHANGED_SHOWN = 20
#: In a copy of a checkout without git (the VM tier's guest), the source of the checkout it
#: was copied from, as :func:`source_of` gave it there (``python -m bench.results REPO``).
SOURCE_FILE = ".plancton-source.json"
NOT_RECORDED = "not recorded"


def source_of(repo: str, written: Iterable[str] = ()) -> dict[str, Any]:
    """Given a checkout and the files the run itself writes (results and plots), return its
    commit, whether its tree was clean and which files differ from the commit. Files the run
    writes do not count as changes: they hold figures, not code that is measured. Where the
    folder is not a git checkout (or git is missing), return what its :data:`SOURCE_FILE`
    says, or a commit of None.
    """
    try:
        commit = _git(repo, "rev-parse", "HEAD").strip()
        excluded = [f":(exclude){os.path.relpath(os.path.abspath(path), repo)}" for path in written]
        status = _git(repo, "status", "--porcelain", "--untracked-files=all", "--", ".", *excluded)
    except (OSError, subprocess.CalledProcessError):
        return _copied_source(repo)
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    more = len(changed) - CHANGED_SHOWN
    shown = changed[:CHANGED_SHOWN] + ([f"and {more} more"] if more > 0 else [])
    return {"commit": commit, "clean": not changed, "changed": shown}


def _copied_source(repo: str) -> dict[str, Any]:
    """Return the source recorded in a copy of a checkout, or an unknown one."""
    try:
        with open(os.path.join(repo, SOURCE_FILE), encoding="utf-8") as handle:
            recorded = json.load(handle)
    except (OSError, ValueError):
        return {"commit": None, "clean": None, "changed": []}
    return {key: recorded.get(key) for key in ("commit", "clean", "changed")}


def _git(repo: str, *args: str) -> str:
    done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def load(path: str) -> dict[str, Any] | None:
    """Return the results file at ``path`` in the current layout, or None when there is none.

    Raises:
        ValueError: the file is not a results file (the message names it).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not a results file ({error}); move it away or give --results") from None
    if not isinstance(document, dict) or "scenarios" not in document:
        raise ValueError(f"{path} is not a results file (no scenarios); move it away or give --results")
    return upgrade(document)


def upgrade(document: Mapping[str, Any]) -> dict[str, Any]:
    """Given a results document in any layout, return it in the current one: a document of a
    single run at the top level becomes one run, whose commit and tree were not recorded."""
    if document.get("format") == FORMAT:
        return dict(document)
    machine = dict(document.get("machine") or {})
    run = {
        "date": document.get("date"),
        "command": document.get("command"),
        "commit": None,
        "clean": None,
        "changed": [],
        "quick": document.get("quick"),
        "shared_host": document.get("shared_host"),
        "load_average_at_start": machine.pop("load_average_at_start", None),
        "load_average_at_end": machine.pop("load_average_at_end", None),
        "machine": machine,
    }
    run_id = str(document.get("date") or "unknown")
    scenarios = {name: {**scenario, "run": run_id} for name, scenario in document["scenarios"].items()}
    return {"format": FORMAT, "runs": {run_id: run}, "scenarios": scenarios}


def merge(
    existing: Mapping[str, Any] | None, run: Mapping[str, Any], scenarios: Mapping[str, Any], order: Sequence[str]
) -> dict[str, Any]:
    """Given the results file as it was (None for none), the record of a new run and the
    scenarios it measured, return the new document: the new scenarios replace those of the
    same name, the others stay with the runs that measured them, in the given order of
    scenarios (unknown names last); runs no scenario refers to any more are dropped.
    """
    empty: dict[str, Any] = {"format": FORMAT, "runs": {}, "scenarios": {}}
    before = upgrade(existing) if existing is not None else empty
    runs = dict(before["runs"])
    run_id = _unique(str(run["date"]), runs)
    runs[run_id] = dict(run)
    merged = {**before["scenarios"], **{name: {**scenario, "run": run_id} for name, scenario in scenarios.items()}}
    rank = {name: index for index, name in enumerate(order)}
    ordered = dict(sorted(merged.items(), key=lambda item: rank.get(item[0], len(rank))))
    used = {scenario["run"] for scenario in ordered.values()}
    return {"format": FORMAT, "runs": {key: value for key, value in runs.items() if key in used}, "scenarios": ordered}


def _unique(key: str, taken: Mapping[str, Any]) -> str:
    """Return ``key``, or ``key#2``, ``key#3``... when a run of that date is already there."""
    candidate, number = key, 1
    while candidate in taken:
        number += 1
        candidate = f"{key}#{number}"
    return candidate


# -- tables -----------------------------------------------------------------------------------


def figures_table(document: Mapping[str, Any], markdown: bool = False) -> str:
    """Given results as a results file holds them, return a table with one line per figure."""
    rows = [("scenario", "figure", "median [min-max]", "target", "verdict")]
    for name, scenario in document["scenarios"].items():
        if scenario["error"]:
            rows.append((name, "error", scenario["error"], "", "FAILED"))
        for data in scenario["figures"]:
            figure = Figure.from_dict(data)
            verdict = {True: "met", False: "MISSED", None: ""}[figure.met]
            rows.append((name, figure.what, figure.shown(), figure.target, verdict))
    return _table(rows, markdown)


def provenance_table(document: Mapping[str, Any], markdown: bool = False) -> str:
    """Given results in the current layout, return a table of where each scenario's figures
    come from (the run's commit and tree, the scenario's start, the host's load then and its
    length), followed by one line per run: its command, machine and load."""
    runs = document["runs"]
    rows = [("scenario", "run (UTC)", "commit", "tree", "quick", "load at start (1, 5, 15 min)", "took")]
    for name, scenario in document["scenarios"].items():
        run = runs[scenario["run"]]
        load = scenario.get("load_average_at_start")
        seconds = scenario.get("seconds")
        rows.append(
            (
                name,
                _date(scenario.get("started") or run.get("date")),
                (run.get("commit") or NOT_RECORDED)[:12],
                _tree(run),
                {True: "yes", False: "no", None: ""}[run.get("quick")],
                _loads(load),
                f"{seconds:.0f} s" if seconds is not None else "",
            )
        )
    lines = [_table(rows, markdown), ""]
    for run_id, run in runs.items():
        bullet = "- " if markdown else ""
        command = f"`{run.get('command')}`" if markdown else str(run.get("command"))
        lines.append(f"{bullet}run of {_date(run.get('date') or run_id)}: {command}; {describe_machine(run)}")
    return "\n".join(lines)


def describe_machine(run: Mapping[str, Any]) -> str:
    """Given a run's record, return its machine and load in one line of prose."""
    machine = run.get("machine") or {}
    parts = [
        f"{machine.get('cores', '?')} cores",
        f"{machine.get('ram_gib', '?')} GiB",
        *([machine["cpu_model"]] if machine.get("cpu_model") else []),
        str(machine.get("os", "?")),
        f"Linux {machine.get('kernel', '?')}",
        f"Docker Engine {machine.get('docker', '?')} (API {machine.get('docker_api', '?')}"
        + (f", cgroup {machine['cgroup']})" if machine.get("cgroup") else ")"),
        f"Python {machine.get('python', '?')}",
    ]
    start, end = _loads(run.get("load_average_at_start")), _loads(run.get("load_average_at_end"))
    return ", ".join(parts) + f"; load average {start} at the start, {end} at the end"


def _tree(run: Mapping[str, Any]) -> str:
    clean = run.get("clean")
    if clean is None:
        return NOT_RECORDED
    return "clean" if clean else f"changed ({len(run.get('changed') or [])} files)"


def _date(value: Any) -> str:
    """Return an ISO date as ``YYYY-MM-DD HH:MM``; anything else as it is."""
    text = str(value or "")
    return text[:16].replace("T", " ") if len(text) >= 16 and text[10] == "T" else text


def _loads(load: Sequence[float] | None) -> str:
    return " ".join(f"{value:.2f}" for value in load) if load else NOT_RECORDED


def _table(rows: Sequence[tuple[str, ...]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join([lines[0], "|" + "---|" * len(rows[0]), *lines[1:]])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


if __name__ == "__main__":
    # the source of a checkout, for a copy of it that has no git (tests/vm/run writes it there)
    print(json.dumps(source_of(sys.argv[1])))
