"""``python -m bench``: run the benchmark scenarios, print a table, write results.json and the plot.

Every container, daemon and helper the run makes is removed or stopped at the end, also when
the run is interrupted with Ctrl-C or SIGTERM.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import docker.errors
import psutil

from bench import fill, htcondor, overhead, owner, presence, reclaim, refill, workqueue
from bench.errors import BenchError
from bench.harness import REPO, Bench, deferred_signals
from bench.stats import Figure, ScenarioResult

SCENARIOS: dict[str, Callable[[Bench], ScenarioResult]] = {
    "refill": refill.run,
    "fill": fill.run,
    "refill-podman": refill.run_podman,
    "fill-podman": fill.run_podman,
    "reclaim": reclaim.run_reclaim,
    "harvest": reclaim.run_harvest,
    "overhead": overhead.run,
    "presence": presence.run,
    "workqueue": workqueue.run_scenario,
    "htcondor": htcondor.run,
    "snooze": owner.run_snooze,
    "lending": owner.run_lending,
}
DEFAULT_RESULTS = os.path.join(REPO, "bench", "results.json")
DEFAULT_PLOT = os.path.join(REPO, "docs", "reclaim.png")
DEFAULT_OVERHEAD_PLOT = os.path.join(REPO, "docs", "overhead.png")
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the benchmark's command line."""
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short pass: fewer repetitions, shorter phases")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated scenarios to run (default: all of {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--shared-host",
        action="store_true",
        help="the host has other users: reclaim and harvest count the owner busy at 90%% of the host (idle below 60%%)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemons' folders and logs (in /tmp)")
    parser.add_argument("--show", action="store_true", help="only print the table of the results file, run nothing")
    parser.add_argument("--markdown", action="store_true", help="with --show: print the table as Markdown")
    parser.add_argument("--results", metavar="FILE", default=DEFAULT_RESULTS, help="where to write the results")
    parser.add_argument("--plot", metavar="FILE", default=DEFAULT_PLOT, help="where to draw reclaim and harvest")
    parser.add_argument(
        "--overhead-plot", metavar="FILE", default=DEFAULT_OVERHEAD_PLOT, help="where to draw the overhead scenario"
    )
    return parser


def machine(bench: Bench) -> dict[str, Any]:
    """Return the facts of the machine the figures were measured on."""
    version = bench.api.version()
    return {
        "cores": psutil.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.system()),
        "docker": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "python": platform.python_version(),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


def table(document: dict[str, Any], markdown: bool = False) -> str:
    """Given results as results.json holds them, return a table with one line per figure:
    aligned plain text, or Markdown.
    """
    rows = [("scenario", "figure", "median [min-max]", "target", "verdict")]
    for name, scenario in document["scenarios"].items():
        if scenario["error"]:
            rows.append((name, "error", scenario["error"], "", "FAILED"))
        for data in scenario["figures"]:
            figure = Figure.from_dict(data)
            verdict = {True: "met", False: "MISSED", None: ""}[figure.met]
            rows.append((name, figure.what, figure.shown(), figure.target, verdict))
    if markdown:
        lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join([lines[0], "|" + "---|" * len(rows[0]), *lines[1:]])
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _raise_interrupt(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, selected: list[str]) -> tuple[list[ScenarioResult], dict[str, Any], bool]:
    """Run the scenarios; return their results, the machine's facts and whether interrupted."""
    results: list[ScenarioResult] = []
    bench = Bench(args.quick, args.keep_logs, args.shared_host)
    if args.keep_logs:
        print(f"bench: logs kept in {bench.workdir}", file=sys.stderr, flush=True)
    facts = machine(bench)
    interrupted = False
    try:
        for name in selected:
            print(f"bench: {name}...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                result = SCENARIOS[name](bench)
            except (BenchError, docker.errors.DockerException) as error:
                result = ScenarioResult(name, error=str(error))
            result.seconds = time.monotonic() - started
            print(f"bench: {name} took {result.seconds:.0f} s", file=sys.stderr, flush=True)
            results.append(result)
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted; cleaning up", file=sys.stderr, flush=True)
    finally:
        with deferred_signals():
            bench.close()
    facts["load_average_at_end"] = [round(load, 2) for load in os.getloadavg()]
    return results, facts, interrupted


def draw_plots(results: list[ScenarioResult], args: argparse.Namespace) -> None:
    """Draw the pictures of the scenarios that have one, or say in one line why none is drawn."""
    timelines = {result.name: result.raw["timeline"] for result in results if "timeline" in result.raw}
    levels = next((result.raw["levels"] for result in results if result.name == "overhead" and result.raw), None)
    if not timelines and not levels:
        return
    try:
        from bench import plot  # noqa: PLC0415 - matplotlib only when there is something to draw
    except ModuleNotFoundError as error:
        print(f"bench: no plot drawn: {error.name} is missing (pip install '.[bench]')", file=sys.stderr)
        return
    if timelines:
        plot.draw(timelines, args.plot)
        print(f"bench: plot in {args.plot}", file=sys.stderr)
    if levels:
        plot.draw_overhead(levels, args.overhead_plot)
        print(f"bench: overhead plot in {args.overhead_plot}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0, 1 when a scenario failed, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    selected = list(SCENARIOS) if not args.only else [name.strip() for name in args.only.split(",")]
    unknown = [name for name in selected if name not in SCENARIOS]
    if unknown:
        print(f"bench: unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    if args.show:
        with open(args.results, encoding="utf-8") as handle:
            print(table(json.load(handle), args.markdown))
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    began = datetime.datetime.now(datetime.UTC)
    results, facts, interrupted = run(args, selected)
    if interrupted:
        print(table({"scenarios": {result.name: result.as_dict() for result in results}}))
        print(f"bench: interrupted: {args.results} left as it was", file=sys.stderr)
        return EXIT_INTERRUPTED
    document = {
        "date": began.isoformat(timespec="seconds"),
        "command": " ".join(["bench/run", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "shared_host": args.shared_host,
        "machine": facts,
        "scenarios": {result.name: result.as_dict() for result in results},
    }
    print(table(document))
    with open(args.results, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")
    draw_plots(results, args)
    print(f"bench: results in {args.results}", file=sys.stderr)
    return 1 if any(result.error for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
