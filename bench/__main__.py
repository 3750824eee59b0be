"""``python -m bench``: run the benchmark scenarios, print a table, merge them into results.json, draw the plots.

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

from bench import (
    desktop_policy,
    fill,
    htcondor,
    overhead,
    owner,
    pool_scale,
    presence,
    reclaim,
    refill,
    results,
    workqueue,
)
from bench.errors import BenchError
from bench.harness import REPO, Bench, deferred_signals
from bench.stats import ScenarioResult

SCENARIOS: dict[str, Callable[[Bench], ScenarioResult]] = {
    "refill": refill.run,
    "fill": fill.run,
    "refill-podman": refill.run_podman,
    "fill-podman": fill.run_podman,
    "reclaim": reclaim.run_reclaim,
    "reclaim-default-timers": reclaim.run_reclaim_default_timers,
    "harvest": reclaim.run_harvest,
    "reclaim-installed": reclaim.run_reclaim_installed,
    "overhead": overhead.run,
    "presence": presence.run,
    "workqueue": workqueue.run_scenario,
    "htcondor": htcondor.run,
    "htcondor-short": htcondor.run_short,
    "snooze": owner.run_snooze,
    "lending": owner.run_lending,
    "pool-scale": pool_scale.run,
    "desktop-policy": desktop_policy.run,
}
#: Scenarios that run only when named: reclaim-installed installs Plancton on this host;
#: pool-scale takes about 22 minutes; desktop-policy 40 to 45 minutes with --quick, about twice that without.
ON_REQUEST = ("reclaim-installed", "pool-scale", "desktop-policy")
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
        help=f"comma-separated scenarios to run (default: all but {', '.join(ON_REQUEST)}; of {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--shared-host",
        action="store_true",
        help="the host has other users: reclaim and harvest count the owner busy at 90%% of the host (idle below 60%%)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemons' folders and logs (in /tmp)")
    parser.add_argument("--show", action="store_true", help="print the tables of the results file, run nothing")
    parser.add_argument(
        "--markdown", action="store_true", help="with --show: print them in Markdown (docs/benchmarks.md)"
    )
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
        "hostname": platform.node(),
        "cores": psutil.cpu_count(),
        "cpu_model": cpu_model(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.system()),
        "docker": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "cgroup": f"v{bench.cgroup_version} {bench.cgroup_driver}",
        "python": platform.python_version(),
    }


def cpu_model() -> str | None:
    """Return the model name of the host's CPU as /proc/cpuinfo gives it, or None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
    except OSError:
        return None
    return names[0] if names else None


def load_average() -> list[float]:
    """Return the host's load average over 1, 5 and 15 minutes, rounded."""
    return [round(load, 2) for load in os.getloadavg()]


def now_iso() -> str:
    """Return the current UTC time in ISO format, to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _raise_interrupt(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, selected: list[str]) -> tuple[list[ScenarioResult], dict[str, Any], bool]:
    """Run the scenarios; return their results, the machine's facts and whether interrupted.
    Each result carries when it started and the host's load then."""
    measured: list[ScenarioResult] = []
    bench = Bench(args.quick, args.keep_logs, args.shared_host)
    if args.keep_logs:
        print(f"bench: logs kept in {bench.workdir}", file=sys.stderr, flush=True)
    facts = machine(bench)
    interrupted = False
    try:
        for name in selected:
            print(f"bench: {name}...", file=sys.stderr, flush=True)
            started, began, load = time.monotonic(), now_iso(), load_average()
            try:
                result = SCENARIOS[name](bench)
            except (BenchError, docker.errors.DockerException) as error:
                result = ScenarioResult(name, error=str(error))
            result.seconds = time.monotonic() - started
            result.started, result.load_average_at_start = began, load
            print(f"bench: {name} took {result.seconds:.0f} s", file=sys.stderr, flush=True)
            measured.append(result)
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted; cleaning up", file=sys.stderr, flush=True)
    finally:
        with deferred_signals():
            bench.close()
    return measured, facts, interrupted


def draw_plots(scenarios: dict[str, Any], measured: list[str], args: argparse.Namespace) -> None:
    """Draw the pictures of the results file's scenarios that have one, when a scenario just
    measured is in them (so that a picture always shows the figures the file holds), or say
    in one line why none is drawn."""
    timelines = {
        name: scenario["raw"]["timeline"]
        for name, scenario in scenarios.items()
        if name in reclaim.TITLES and "timeline" in scenario["raw"]
    }
    overhead = scenarios.get("overhead", {}).get("raw", {}).get("levels")
    draw_timelines = bool(set(timelines) & set(measured))
    draw_overhead = bool(overhead) and "overhead" in measured
    if not draw_timelines and not draw_overhead:
        return
    try:
        from bench import plot  # noqa: PLC0415 - matplotlib only when there is something to draw
    except ModuleNotFoundError as error:
        print(f"bench: no plot drawn: {error.name} is missing (pip install '.[bench]')", file=sys.stderr)
        return
    if draw_timelines:
        plot.draw(timelines, args.plot)
        print(f"bench: plot in {args.plot}", file=sys.stderr)
    if draw_overhead:
        plot.draw_overhead(overhead, args.overhead_plot)
        print(f"bench: overhead plot in {args.overhead_plot}", file=sys.stderr)


def show(path: str, markdown: bool) -> int:
    """Print the tables of a results file; return 0, or 2 when there is none to read."""
    try:
        document = results.load(path)
    except ValueError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    if document is None:
        print(f"bench: no results in {path}: run bench/run first", file=sys.stderr)
        return 2
    print(results.figures_table(document, markdown))
    print()
    print(results.provenance_table(document, markdown))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0, 1 when a scenario failed, 2 on a usage error, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    everyday = [name for name in SCENARIOS if name not in ON_REQUEST]
    selected = everyday if not args.only else [name.strip() for name in args.only.split(",")]
    unknown = [name for name in selected if name not in SCENARIOS]
    if unknown:
        print(f"bench: unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    if args.show:
        return show(args.results, args.markdown)
    try:
        existing = results.load(args.results)
    except ValueError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    record = {
        "date": now_iso(),
        "command": " ".join(["bench/run", *(argv if argv is not None else sys.argv[1:])]),
        **results.source_of(REPO, [args.results, args.plot, args.overhead_plot]),
        "quick": args.quick,
        "shared_host": args.shared_host,
        "load_average_at_start": load_average(),
    }
    measured, facts, interrupted = run(args, selected)
    scenarios = {result.name: result.as_dict() for result in measured}
    print(results.figures_table({"scenarios": scenarios}))
    if interrupted:
        print(f"bench: interrupted: {args.results} left as it was", file=sys.stderr)
        return EXIT_INTERRUPTED
    record |= {"load_average_at_end": load_average(), "machine": facts}
    document = results.merge(existing, record, scenarios, list(SCENARIOS))
    with open(args.results, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")
    draw_plots(document["scenarios"], list(scenarios), args)
    kept = [name for name in document["scenarios"] if name not in scenarios]
    if kept:
        print(f"bench: {args.results} keeps the earlier figures of {', '.join(kept)}", file=sys.stderr)
    print(f"bench: results in {args.results}", file=sys.stderr)
    return 1 if any(result.error for result in measured) else 0


if __name__ == "__main__":
    sys.exit(main())
