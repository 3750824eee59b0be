"""Fill: from no pilot to N = 20 running, against the same 20 containers started one by one.

One daemon per number of concurrent create/start requests (1, 2, 4, 8; the daemon's own
START_CONCURRENCY is one of them) waits in drain mode with max_docks 20 and docks_per_loop 20.
A repetition runs ``planctonctl resume`` and times from the moment the mode was written to the
engine's ``start`` event of the 20th pilot; then ``planctonctl drain`` and the pilots are
removed. The baseline creates and starts the very same container 20 times, one after another,
with the Docker SDK. Repetitions take turns between all variants.

``fill-podman`` measures the same against rootful Podman's API service (the baseline the same
code on Podman's socket).
"""

import functools
import time
from collections.abc import Callable

from bench.engine import BENCH_LABEL
from bench.events import action_of_baseline
from bench.floor import create_and_start
from bench.harness import IDLE_OWNER, Bench, Plancton, podman_bench
from bench.stats import Figure, ScenarioResult, Stats, at_most
from plancton.daemon.actions import START_CONCURRENCY

PILOTS = 20
CONCURRENCIES = (1, 2, 4, 8)
COMMAND = ("sleep", "3600")
TARGET_RATIO = 1.0
BASELINE = "SDK, one after another"


def _plancton_fill(bench: Bench, plancton: Plancton) -> float:
    """Resume a drained daemon; return the seconds until its 20 pilots run; drain and empty it."""
    plancton.ctl("resume")
    resumed = plancton.mode_changed_at()
    started = plancton.wait_started(resumed, PILOTS, timeout=180)
    elapsed = max(event.time for event in started) - resumed
    plancton.ctl("drain")
    plancton.remove_pilots()
    return elapsed


def _sdk_fill(bench: Bench) -> float:
    """Create and start 20 pilot-like containers one after another; return the seconds it took."""
    container = bench.pilot_like("fill", COMMAND)
    began = time.time()
    for _ in range(PILOTS):
        create_and_start(bench.api, container)
    tag = bench.baseline_tag("fill")
    started = bench.events.wait(action_of_baseline(tag, "start"), began, PILOTS, what="baseline starts")
    elapsed = max(event.time for event in started) - began
    bench.remove_containers(f"{BENCH_LABEL}={tag}")
    return elapsed


def run_podman(bench: Bench) -> ScenarioResult:
    """Measure the fill times on rootful Podman."""
    with podman_bench(bench) as podman:
        return run(podman, scenario="fill-podman")


def run(bench: Bench, scenario: str = "fill") -> ScenarioResult:
    """Measure the fill time of Plancton at each concurrency and of the sequential SDK baseline."""
    repetitions = 1 if bench.quick else 3
    settings = {
        "max_docks": PILOTS,
        "docks_per_loop": PILOTS,
        "max_starts_per_minute": 1000,
        "docker_cmd": list(COMMAND),
        **IDLE_OWNER,
    }
    result = ScenarioResult(scenario, settings={"plancton": settings, "repetitions": repetitions})
    daemons: dict[int, Plancton] = {}
    times: dict[str, list[float]] = {BASELINE: []}
    try:
        for concurrency in CONCURRENCIES:
            daemons[concurrency] = bench.plancton(f"fill{concurrency}", settings)
            daemons[concurrency].ctl("drain")
            daemons[concurrency].foreground(start_concurrency=concurrency)
            times[f"concurrency {concurrency}"] = []
        turns: list[tuple[str, Callable[[], float]]] = [(BASELINE, functools.partial(_sdk_fill, bench))]
        turns += [
            (f"concurrency {concurrency}", functools.partial(_plancton_fill, bench, plancton))
            for concurrency, plancton in daemons.items()
        ]
        for repetition in range(repetitions):
            shift = repetition % len(turns)
            for name, measure in turns[shift:] + turns[:shift]:
                times[name].append(measure())
    finally:
        for plancton in daemons.values():
            plancton.stop()
            plancton.remove_pilots()

    baseline = times[BASELINE]
    result.figures = [Figure(f"{BASELINE}: 0 to {PILOTS} running", "s", Stats.of(baseline))]
    medians = {}
    for concurrency in CONCURRENCIES:
        ours = times[f"concurrency {concurrency}"]
        medians[concurrency] = Stats.of(ours).median
        ratio = Stats.paired(ours, baseline)
        default = concurrency == START_CONCURRENCY
        label = f"Plancton, {concurrency} concurrent starts" + (" (the default)" if default else "")
        result.figures.append(Figure(f"{label}: 0 to {PILOTS} running", "s", Stats.of(ours)))
        result.figures.append(
            Figure(
                f"{label} / baseline",
                "x",
                ratio,
                target=f"<= {TARGET_RATIO}x" if default else "",
                met=at_most(ratio.median, TARGET_RATIO) if default else None,
            )
        )
    best = min(medians, key=lambda concurrency: medians[concurrency])
    result.figures.append(Figure("fastest number of concurrent starts", "at once", value=float(best)))
    result.raw = {"seconds": times, "daemon_start_concurrency": START_CONCURRENCY}
    return result
