"""The owner's side: how fast a snooze takes the host back and gives it again, and how well
``lend_cores`` lends part of the host while the owner works.

- **snooze**: ``planctonctl snooze`` with pilots running; times from the command to the
  engine's ``pause`` event of the last pilot, and from the snooze's end (the time written in
  its file) to the ``unpause`` of the last one. The daemon runs a 30 s loop, so only the
  command's signal and the snooze's own timer can wake it in time.
- **lending**: an owner present all along (outside ``run_hours``) with ``lend_cores: 1`` and
  pilots that could each use the whole host (``cpus_per_dock`` = every core) burning CPU: the
  pilots' CPU from their parent cgroup, which must stay at 1 core; then the owner's work on the
  other cores, timed with the pilots paused by a snooze (what ``lend_cores: 0`` does) and with
  them lending, in pairs, against the owner alone before any pilot ran.
"""

import math
import os
import time
from typing import Any

from bench.events import action_of
from bench.harness import IDLE_OWNER, Bench
from bench.reclaim import NCPUS, Owner
from bench.stats import Figure, ScenarioResult, Stats, at_most

POOL = 2
SLEEPING = ("sleep", "3600")
BURNING = ("sh", "-c", "while :; do :; done")
SNOOZE_SECONDS = 4.0
GRACE_SPAWN = 1.0
TARGET_PAUSE_SECONDS = 1.0
TARGET_BACK_SECONDS = GRACE_SPAWN + 0.5
SNOOZE_SETTINGS: dict[str, Any] = {
    **IDLE_OWNER,
    "max_docks": POOL,
    "docker_cmd": list(SLEEPING),
    "grace_spawn": GRACE_SPAWN,
    "grace_kill": 3600,
    "main_sleep": 30,
}
LENT_CORES = 1.0
LENDING_TOLERANCE = 0.05
WINDOW_SECONDS = 4.0
OWNER_SECONDS = 4.0


def run_snooze(bench: Bench) -> ScenarioResult:
    """Measure the snooze: command to pilots paused, end to pilots running again."""
    repetitions = 3 if bench.quick else 10
    result = ScenarioResult("snooze", settings={"plancton": SNOOZE_SETTINGS, "repetitions": repetitions})
    plancton = bench.plancton("snooze", SNOOZE_SETTINGS)
    paused_after: list[float] = []
    back_after: list[float] = []
    try:
        plancton.foreground()
        plancton.wait_started(0.0, POOL)
        for _ in range(repetitions):
            time.sleep(1.0)
            asked = time.time()
            plancton.ctl("snooze", f"{SNOOZE_SECONDS:g}")
            paused = bench.events.wait(action_of(plancton.name, "pause"), asked, POOL, 30, "pilots paused")
            paused_after.append(max(event.time for event in paused) - asked)
            with open(os.path.join(plancton.rundir, "snooze"), encoding="utf-8") as handle:
                ends = float(handle.read())
            resumed = bench.events.wait(action_of(plancton.name, "unpause"), ends, POOL, 60, "pilots resumed")
            back_after.append(max(event.time for event in resumed) - ends)
    finally:
        plancton.stop()
        plancton.remove_pilots()
    pause, back = Stats.of(paused_after), Stats.of(back_after)
    result.figures = [
        Figure(
            "snooze to pilots paused",
            "s",
            pause,
            target=f"< {TARGET_PAUSE_SECONDS:g} s, every run",
            met=at_most(pause.high, TARGET_PAUSE_SECONDS),
        ),
        Figure(
            "snooze's end to pilots running",
            "s",
            back,
            target=f"< grace_spawn + 0.5 = {TARGET_BACK_SECONDS:g} s, every run",
            met=at_most(back.high, TARGET_BACK_SECONDS),
        ),
    ]
    result.raw = {"paused_after": paused_after, "back_after": back_after}
    return result


def lending_settings() -> dict[str, Any]:
    """Return the lending daemon's settings: the owner present all along (run_hours allow no
    day but one that is not today), one core lent, pilots that could use the whole host."""
    other_day = time.strftime("%a", time.localtime(time.time() + 86400))
    return {
        "max_docks": POOL,
        "docks_per_loop": POOL,
        "cpus_per_dock": NCPUS,
        "docker_cmd": list(BURNING),
        "lend_cores": LENT_CORES,
        "run_hours": [other_day],
        "grace_kill": 3600,
        "main_sleep": 1,
        "vacate_time": 1,
    }


def run_lending(bench: Bench) -> ScenarioResult:
    """Measure the pilots' CPU under lend_cores and the owner's slowdown beside them."""
    windows = 4 if bench.quick else 10
    pairs = 3 if bench.quick else 10
    settings = lending_settings()
    result = ScenarioResult("lending", settings={"plancton": settings, "windows": windows, "pairs": pairs})
    owner = Owner(bench)
    owner_cores = max(1, NCPUS - math.ceil(LENT_CORES))
    iterations = owner.iterations_for(OWNER_SECONDS)
    alone = [owner.work(iterations, cores=owner_cores).seconds for _ in range(pairs)]
    plancton = bench.plancton("lending", settings)
    cores: list[float] = []
    paused: list[float] = []
    lending: list[float] = []
    try:
        plancton.foreground()
        plancton.wait_started(0.0, 1)
        cgroup = plancton.cgroup
        time.sleep(2.0)
        for _ in range(windows):
            first, began = cgroup.cpu_seconds(), time.monotonic()
            time.sleep(WINDOW_SECONDS)
            last, ended = cgroup.cpu_seconds(), time.monotonic()
            if first is not None and last is not None:
                cores.append((last - first) / (ended - began))
        for _ in range(pairs):
            since = time.time()
            plancton.ctl("snooze", "1h")
            bench.events.wait(action_of(plancton.name, "pause"), since, 1, 30, "the lent pilot paused")
            paused.append(owner.work(iterations, cores=owner_cores).seconds)
            since = time.time()
            plancton.ctl("snooze", "--cancel")
            bench.events.wait(action_of(plancton.name, "unpause"), since, 1, 30, "the lent pilot resumed")
            lending.append(owner.work(iterations, cores=owner_cores).seconds)
    finally:
        plancton.stop()
        plancton.remove_pilots()
    used = Stats.of(cores)
    within = abs(used.median - LENT_CORES) <= LENDING_TOLERANCE * LENT_CORES  # False when not measured
    baseline = Stats.of(alone).median
    result.figures = [
        Figure(
            f"pilots' CPU with lend_cores {LENT_CORES:g}, owner present",
            "cores",
            used,
            target=f"{LENT_CORES:g} ± {LENDING_TOLERANCE:.0%}",
            met=within,
        ),
        Figure(f"owner on {owner_cores} cores, alone", "s", Stats.of(alone)),
        Figure("owner's slowdown, lend_cores 0 (pilots paused) / alone", "x", Stats.of([t / baseline for t in paused])),
        Figure("owner's slowdown, lend_cores 1 / alone", "x", Stats.of([t / baseline for t in lending])),
        Figure("lend_cores 1 / lend_cores 0 (paired)", "x", Stats.paired(lending, paused)),
    ]
    result.raw = {"cores": cores, "alone": alone, "paused": paused, "lending": lending}
    return result
