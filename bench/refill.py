"""Refill: a pilot's process is killed from outside; how soon is a fresh pilot running?

Three replacers run side by side, each with its own pool of sleeping busybox containers, and
the repetitions take turns between them so that the machine's noise falls on all alike:

- Plancton (``planctonctl foreground``, max_docks 3, otherwise default settings);
- the floor: :mod:`bench.floor`, which waits for the ``die`` event, removes the container and
  creates and starts the same container Plancton would;
- for reference, Docker's own restart policy (``--restart=always``), which restarts the same
  container rather than a fresh one (a fresh container for each repetition, so that Docker's
  restart back-off never grows).

``refill-podman`` measures Plancton and the same floor (the same code, on Podman's socket)
against rootful Podman's API service, without the restart policy.

Each repetition SIGKILLs the oldest container's process by its pid and times from the kill to
the engine's ``start`` event of the replacement.
"""

import json
import os
import signal
import sys
import time
from collections.abc import Callable

from bench.engine import BENCH_LABEL
from bench.errors import BenchError
from bench.events import Event, action_of, action_of_baseline
from bench.floor import create_and_start
from bench.harness import IDLE_OWNER, Bench, podman_bench
from bench.stats import Figure, ScenarioResult, Stats, at_most

POOL = 3
COMMAND = ("sleep", "3600")
#: Plancton counts a pilot that exits within 3 s as a failed start; older ones are replaced at once.
MIN_AGE_SECONDS = 3.5
TARGET_SECONDS = 0.5
TARGET_RATIO = 1.5


def _kill_process(bench: Bench, container: str) -> float:
    """SIGKILL a container's main process from the host; return the wall-clock time of the kill."""
    pid = bench.api.inspect_container(container)["State"]["Pid"]
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    return killed_at


def _kill_oldest(bench: Bench, started: Callable[[Event], bool], gone: Callable[[Event], bool]) -> float:
    """SIGKILL the process of the oldest running container of a pool; return the seconds until a
    fresh container of that pool started.

    Raises:
        BenchError: no replacement started in time.
    """
    dead = {event.container for event in bench.events.matching(lambda event: event.action == "die")}
    alive = [event for event in bench.events.matching(started) if event.container not in dead]
    if not alive:
        raise BenchError("no running container to kill")
    oldest = min(alive, key=lambda event: event.time)
    time.sleep(max(0.0, oldest.time + MIN_AGE_SECONDS - time.time()))
    killed_at = _kill_process(bench, oldest.container)
    fresh = bench.events.wait(lambda event: started(event) and event.container != oldest.container, killed_at)[0]
    bench.events.wait(lambda event: gone(event) and event.container == oldest.container, killed_at, timeout=30)
    return fresh.time - killed_at


def _restart_policy_once(bench: Bench) -> float:
    """Kill the process of a fresh ``--restart=always`` container; return the seconds until the
    engine started it again.
    """
    tag = "restart"
    api = bench.api
    container = create_and_start(api, bench.pilot_like(tag, COMMAND), restart_policy={"Name": "always"})
    started = action_of_baseline(bench.baseline_tag(tag), "start")
    first = bench.events.wait(lambda event: started(event) and event.container == container, 0.0)[0]
    time.sleep(max(0.0, first.time + 0.2 - time.time()))
    killed_at = _kill_process(bench, container)
    again = bench.events.wait(lambda event: started(event) and event.container == container, killed_at)[0]
    api.remove_container(container, force=True)
    return again.time - killed_at


def run_podman(bench: Bench) -> ScenarioResult:
    """Measure refill times of Plancton and the floor on rootful Podman, taking turns."""
    with podman_bench(bench) as podman:
        return run(podman, scenario="refill-podman", restart_policy=False)


def run(bench: Bench, scenario: str = "refill", restart_policy: bool = True) -> ScenarioResult:
    """Measure refill times of Plancton, the floor and (with ``restart_policy``) the engine's
    restart policy, taking turns."""
    repetitions = 5 if bench.quick else 15
    settings = {"max_docks": POOL, "docker_cmd": list(COMMAND), **IDLE_OWNER}
    result = ScenarioResult(scenario, settings={"plancton": settings, "pool": POOL, "repetitions": repetitions})
    plancton = bench.plancton("refill", settings)
    ours_started = action_of(plancton.name, "start")
    ours_gone = action_of(plancton.name, "destroy")
    floor_tag = bench.baseline_tag("floor")
    floor_started = action_of_baseline(floor_tag, "start")
    floor_gone = action_of_baseline(floor_tag, "destroy")
    times: dict[str, list[float]] = {"plancton": [], "floor": []}
    turns: list[tuple[str, Callable[[], float]]] = [
        ("plancton", lambda: _kill_oldest(bench, ours_started, ours_gone)),
        ("floor", lambda: _kill_oldest(bench, floor_started, floor_gone)),
    ]
    if restart_policy:
        times["restart policy"] = []
        turns.append(("restart policy", lambda: _restart_policy_once(bench)))
    floor = None
    try:
        plancton.foreground()
        container = json.dumps(bench.pilot_like("floor", COMMAND))
        floor = bench.spawn([sys.executable, "-m", "bench.floor", container, str(POOL)])
        plancton.wait_started(0.0, POOL)
        bench.events.wait(floor_started, 0.0, POOL, what="starts of the floor's containers")
        for repetition in range(repetitions):
            shift = repetition % len(turns)
            for name, measure in turns[shift:] + turns[:shift]:
                times[name].append(measure())
    finally:
        plancton.stop()
        if floor is not None:
            bench.stop_process(floor)
        plancton.remove_pilots()
        bench.remove_containers(f"{BENCH_LABEL}={floor_tag}")

    ours, floor_stats = Stats.of(times["plancton"]), Stats.of(times["floor"])
    ratios = Stats.paired(times["plancton"], times["floor"])
    result.figures = [
        Figure(
            "Plancton: kill to fresh pilot running",
            "s",
            ours,
            target=f"median < {TARGET_SECONDS} s",
            met=at_most(ours.median, TARGET_SECONDS),
        ),
        Figure("Plancton: p95", "s", value=ours.p95),
        Figure("floor (die event, remove, create, start)", "s", floor_stats),
        *(
            [Figure("Docker restart policy (same container)", "s", Stats.of(times["restart policy"]))]
            if restart_policy
            else []
        ),
        Figure(
            "Plancton / floor (paired)",
            "x",
            ratios,
            target=f"<= {TARGET_RATIO}x",
            met=at_most(ratios.median, TARGET_RATIO),
        ),
    ]
    result.raw = {"seconds": times}
    return result
