"""Reclaim and harvest: CPU-burning pilots on every core, and an owner who wants them back.

Both scenarios run Plancton with as many pilots as cores (cpus_per_dock 1), each burning CPU
with a shell loop that exits on SIGTERM, and the default owner thresholds (busy at 40% of the
host, idle below 20%). The timers are shortened so that a run takes minutes: main_sleep 1 s,
pause_delay 0 (pause at the first loop that sees the owner), grace_kill 2 s, grace_spawn 5 s.

The owner is ``ncpus`` Python processes that burn CPU: for a fixed amount of work (reclaim), or
for a fixed time (harvest). The pilots' CPU comes from their parent cgroup, the host's from
/proc/stat and the owner's from its processes, all read every 50 ms.

Reclaim alternates the owner alone (no daemon, no pilot) and the owner with the pilots
burning, and reports the owner's slowdown, how soon the pilots' CPU share fell under 10%, and
how soon they were asked to stop (the engine's SIGTERM) and gone (up to vacate_time later: a
pilot starved of CPU is slow to act on its SIGTERM). Harvest keeps the owner idle, busy, then
idle again, and reports the share of the pilots' CPU ceiling (max_docks x cpus_per_dock) they
used while the owner was idle, and how soon they were back after the owner stopped.
"""

import itertools
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from bench.cpu import (
    CpuReading,
    CpuSampler,
    cores,
    host_busy_seconds,
    other_seconds_between,
    parent_cpu_idle,
    pilot_seconds_between,
    process_cpu_seconds,
)
from bench.errors import BenchError
from bench.events import Event, action_of, running_at, running_over_time
from bench.harness import Bench, InstalledPlancton, Plancton
from bench.stats import Figure, ScenarioResult, Stats, at_least, at_most
from plancton.config.schema import default_value

NCPUS = psutil.cpu_count() or 1
#: The timers of reclaim and harvest, short so that a run takes minutes.
SHORT_TIMERS: dict[str, Any] = {"main_sleep": 1, "pause_delay": 0, "grace_kill": 2, "grace_spawn": 5, "vacate_time": 2}
#: The pilots: as many as cores, each burning one.
POOL: dict[str, Any] = {
    "max_docks": NCPUS,
    "cpus_per_dock": 1,
    "docker_cmd": ["sh", "-c", "trap 'exit 0' TERM; while :; do :; done"],
}
SETTINGS: dict[str, Any] = {**POOL, **SHORT_TIMERS}
#: With --shared-host: the other users of the machine must not count as the owner, whose
#: processes take the whole host; Plancton's defaults are 40% and 20%.
SHARED_HOST_THRESHOLDS = {"owner_busy_percent": 90, "owner_idle_percent": 60, "cpu_pressure_percent": 100}
CEILING_CORES = SETTINGS["max_docks"] * SETTINGS["cpus_per_dock"]
BACKGROUND_SECONDS = 2.0
OWNER_WORK = "import sys\nx = 0\nfor i in range(int(sys.argv[1])):\n    x ^= i\n"
OWNER_FOR = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"
CALIBRATION_ITERATIONS = 3_000_000
#: The owner's work alone: past grace_kill and a few loops, so that stopping is seen.
OWNER_SECONDS = 8.0
SHARE_LIMIT = 0.10
#: Pairs of the full run: this host's own noise moves a single pair by 5 to 10%, and the
#: median's 95% interval narrows with the square root of their number.
PAIRS = 20
#: Plancton's own share of the owner's CPU: the pilots' CPU and the rest of the host's extra
#: CPU while the owner runs, as a percent of the owner's CPU time.
TARGET_OWN_SHARE_PERCENT = 0.5
#: How late the pause may come after pause_delay (the owner is seen at the next loop).
PAUSE_LATENESS_SECONDS = 1.0
#: How late a policy timer may fire: the loop wakes at its due time.
TIMER_LATENESS_SECONDS = 0.2
#: How late pilots may be back after grace_spawn ends: the timer, then their starts.
BACK_LATENESS_SECONDS = 0.5
TARGET_SHARE_SECONDS = 1.0
#: Turns of reclaim-installed (the owner alone, beside the installed service, beside root's).
INSTALLED_TURNS = 8
#: How far the service that ./install sets up may lag a daemon run as root.
TARGET_INSTALLED = 1.2
TARGET_HARVEST = 0.90
TIMELINE_STEP = 0.1
SETTLE_SECONDS = 1.5
SETTLE_TIMEOUT_SECONDS = 30.0
DEFAULT_IDLE_PERCENT = float(default_value("owner_idle_percent"))
#: The scenarios whose last timeline docs/reclaim.png draws, with their panels' titles.
TITLES = {
    "reclaim": "Reclaim: the owner starts a fixed amount of work while pilots burn every core",
    "harvest": "Harvest: the owner idle, busy, then idle again",
}
#: The daemon's log line when the owner is idle again and grace_spawn starts.
IDLE_AGAIN = "owner idle again: pilots start again after grace_spawn"


@dataclass(frozen=True)
class OwnerRun:
    """One spell of the owner's work: when it began and ended (epoch seconds), and the CPU
    time its processes used."""

    began: float
    ended: float
    cpu_seconds: float
    #: the CPU seconds the rest of the host used meanwhile (engine, daemon, others; not
    #: the pilots), when a sampler was given
    others_seconds: float = math.nan

    @property
    def seconds(self) -> float:
        """The spell's wall time."""
        return self.ended - self.began


class Owner:
    """The host's owner: CPU-burning processes, one per core it works on (by default every
    core), started by the benchmark."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def _burn(self, code: str, argument: str, sampler: CpuSampler | None, cores: int = NCPUS) -> OwnerRun:
        began = time.time()
        workers = [self.bench.spawn([sys.executable, "-c", code, argument]) for _ in range(cores)]
        if sampler is not None:
            for worker in workers:
                sampler.add_owner(worker.pid)
        cpu_seconds = 0.0
        for worker in workers:
            # reaped here rather than by Popen, for the CPU time the kernel counted
            _, status, usage = os.wait4(worker.pid, 0)
            worker.returncode = os.waitstatus_to_exitcode(status)
            cpu_seconds += usage.ru_utime + usage.ru_stime
            self.bench.stop_process(worker)
        ended = time.time()
        others = math.nan if sampler is None else other_seconds_between(sampler.readings, began, ended)
        return OwnerRun(began, ended, cpu_seconds, others)

    def work(self, iterations: int, sampler: CpuSampler | None = None, cores: int = NCPUS) -> OwnerRun:
        """Burn ``cores`` cores (every one by default) for a fixed amount of work each; return
        the spell."""
        return self._burn(OWNER_WORK, str(iterations), sampler, cores)

    def busy_for(self, seconds: float, sampler: CpuSampler | None = None) -> OwnerRun:
        """Burn every core for a fixed time; return the spell."""
        return self._burn(OWNER_FOR, f"{seconds:.3f}", sampler)

    def iterations_for(self, seconds: float) -> int:
        """Return the amount of work that keeps the owner busy about ``seconds`` on this host."""
        calibration = self.work(CALIBRATION_ITERATIONS)
        return max(1, round(CALIBRATION_ITERATIONS * seconds / max(0.05, calibration.seconds)))


def settings_for(bench: Bench, base: dict[str, Any] = SETTINGS) -> dict[str, Any]:
    """Return the daemon's settings: ``base``, with :data:`SHARED_HOST_THRESHOLDS` when the
    run was told that the host has other users.

    Raises:
        BenchError: the host is too busy for Plancton's default thresholds, so the pilots
            would never start (the message suggests --shared-host).
    """
    if bench.shared_host:
        return {**base, **SHARED_HOST_THRESHOLDS}
    before = host_busy_seconds()
    time.sleep(BACKGROUND_SECONDS)
    background = 100 * (host_busy_seconds() - before) / (BACKGROUND_SECONDS * NCPUS)
    if background >= DEFAULT_IDLE_PERCENT:
        raise BenchError(
            f"the host is busy without the benchmark ({background:.0f}% of its CPU, the owner counts as idle "
            f"only below {DEFAULT_IDLE_PERCENT:g}%): run on a quiet host, or with --shared-host"
        )
    return dict(base)


# -- analysis -----------------------------------------------------------------------------


def first_share_below(readings: Sequence[CpuReading], since: float, limit: float) -> float:
    """Return the seconds from ``since`` to the end of the first sampling interval in which
    the pilots used less than ``limit`` of the host's CPU (nan when none did).
    """
    for before, after in itertools.pairwise(readings):
        if after.time < since:
            continue
        if cores(before, after)[0] / NCPUS < limit:
            return after.time - since
    return math.nan


def own_share_parts(
    pilots_seconds: Sequence[float],
    others_present: Sequence[float],
    others_alone: Sequence[float],
    owner_cpu_present: Sequence[float],
) -> tuple[list[float], list[float]]:
    """Given, for each pair, the pilots' CPU seconds while the owner ran, the rest of the
    host's CPU seconds meanwhile with pilots present and with the owner alone, and the owner's
    CPU seconds with pilots present, return the two parts of Plancton's share of the owner's
    CPU in each pair, each as a percent of the owner's CPU time: the pilots' part, and the
    machinery's (the engine and the daemon: what the rest of the host took beyond what it
    takes anyway)."""
    pairs = list(zip(pilots_seconds, others_present, others_alone, owner_cpu_present, strict=True))
    return (
        [100 * pilots / owner for pilots, _, _, owner in pairs],
        [100 * (present - alone) / owner for _, present, alone, owner in pairs],
    )


def machinery_split(
    machinery_part: Sequence[float], daemon_seconds: Sequence[float], owner_cpu_present: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Given the machinery's part of each pair (see :func:`own_share_parts`), the daemon's own
    CPU seconds while the owner ran and the owner's CPU seconds, return the machinery's part
    split in two, each as a percent of the owner's CPU time: the daemon's, and the rest (the
    engine's and whatever else the host did beyond what it does anyway)."""
    daemon = [100 * seconds / owner for seconds, owner in zip(daemon_seconds, owner_cpu_present, strict=True)]
    return daemon, [machinery - own for machinery, own in zip(machinery_part, daemon, strict=True)]


def share_between(readings: Sequence[CpuReading], start: float, end: float) -> float:
    """Return the pilots' mean share of the host's CPU between two times."""
    return pilot_seconds_between(readings, start, end) / (NCPUS * max(1e-9, end - start))


def _after(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    """Return one time of every run, NaN where the run did not see it happen."""
    return [math.nan if run[key] is None else run[key] for run in runs]


def _every_run_within(what: str, seconds: list[float], limit: float, limit_text: str) -> Figure:
    """Return a figure in seconds whose target every run must meet: at most ``limit``."""
    met = all(at_most(value, limit) for value in seconds)
    return Figure(what, "s", Stats.of(seconds), target=f"<= {limit_text}, every run", met=met)


def last_of_pilots(events: Sequence[Event], action: str, pilots: set[str]) -> float | None:
    """Return when the last of the given pilots had an action (None unless all had it)."""
    times: dict[str, float] = {}
    for event in events:
        if event.action == action and event.container in pilots:
            times.setdefault(event.container, event.time)
    return max(times.values()) if len(times) == len(pilots) and pilots else None


def timeline(
    readings: Sequence[CpuReading], events: Sequence[Event], origin: float, marks: dict[str, float]
) -> dict[str, Any]:
    """Return CPU use (in cores) and pilot counts every :data:`TIMELINE_STEP` seconds, for
    results.json and the plot; times are seconds from ``origin``.
    """
    series: dict[str, Any] = {"t": [], "owner": [], "pilots": [], "other": [], "running": [], "paused": []}
    counts = running_over_time(events)
    previous = readings[0] if readings else None
    for reading in readings[1:]:
        assert previous is not None
        if reading.time - previous.time < TIMELINE_STEP:
            continue
        pilots, owner, host = cores(previous, reading)
        running, paused = 0, 0
        for when, running_now, paused_now in counts:
            if when > reading.time:
                break
            running, paused = running_now, paused_now
        series["t"].append(round(reading.time - origin, 2))
        series["owner"].append(round(owner, 3))
        series["pilots"].append(round(pilots, 3))
        series["other"].append(round(max(0.0, host - pilots - owner), 3))
        series["running"].append(running)
        series["paused"].append(paused)
        previous = reading
    series["marks"] = {name: round(value - origin, 2) for name, value in marks.items()}
    return series


# -- reclaim ------------------------------------------------------------------------------


def _owner_alone(bench: Bench, owner: Owner, iterations: int, cgroup_of: Plancton) -> OwnerRun:
    with CpuSampler(cgroup_of.cgroup) as sampler:
        return owner.work(iterations, sampler)


def _pilot_events(bench: Bench, plancton: Plancton, since: float) -> list[Event]:
    return bench.events.matching(action_of(plancton.name, "start", "kill", "die", "pause", "unpause"), since)


def _wait_burning(bench: Bench, plancton: Plancton, since: float) -> None:
    """Wait until every pilot has been running, none paused, for :data:`SETTLE_SECONDS`: at
    start-up the daemon may take dockerd's work of creating them for a busy owner.

    Raises:
        BenchError: that did not happen within :data:`SETTLE_TIMEOUT_SECONDS`.
    """
    plancton.wait_started(since, NCPUS)
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        series = running_over_time(_pilot_events(bench, plancton, since))
        if series and series[-1][1:] == (NCPUS, 0) and time.time() - series[-1][0] >= SETTLE_SECONDS:
            return
        time.sleep(0.1)
    why = "; ".join(plancton.state().why)
    raise BenchError(f"the {NCPUS} pilots did not keep running for {SETTLE_SECONDS:g} s ({why})")


def first_after(events: Sequence[Event], action: str, container: str, since: float) -> float | None:
    """Return when a container first had an action at or after ``since`` (None if never)."""
    return next((e.time for e in events if e.container == container and e.action == action and e.time >= since), None)


def sigterm_after_pause(events: Sequence[Event], pilots: set[str], since: float) -> float | None:
    """Return the longest time from a pilot's pause to its SIGTERM (the engine's first "kill"
    event after it), among pilots paused after ``since``; None unless every pilot had both."""
    waits = []
    for pilot in pilots:
        paused = first_after(events, "pause", pilot, since)
        asked = first_after(events, "kill", pilot, paused) if paused is not None else None
        if asked is None or paused is None:
            return None
        waits.append(asked - paused)
    return max(waits) if waits else None


def _owner_with_pilots(bench: Bench, owner: Owner, iterations: int, plancton: Plancton) -> dict[str, Any]:
    """Start the daemon, let its pilots burn, run the owner; return what happened."""
    launched = time.time()
    plancton.foreground()
    try:
        with CpuSampler(plancton.cgroup) as sampler:
            _wait_burning(bench, plancton, launched)
            cpu_idle = parent_cpu_idle(plancton.cgroup)
            daemon_before = process_cpu_seconds(plancton.pid)
            spell = owner.work(iterations, sampler)
            daemon_during = process_cpu_seconds(plancton.pid) - daemon_before
            time.sleep(0.3)
    finally:
        plancton.stop()
        plancton.remove_pilots()
    began, ended = spell.began, spell.ended
    events = _pilot_events(bench, plancton, launched)
    pilots = running_at(events, began)
    stopped = last_of_pilots([event for event in events if event.time <= ended], "die", pilots)
    # the engine's first "kill" event of a pilot is the SIGTERM of its stop
    asked = last_of_pilots([event for event in events if began <= event.time <= ended], "kill", pilots)
    paused = last_of_pilots([event for event in events if event.time >= began], "pause", pilots)
    return {
        "owner_seconds": spell.seconds,
        "owner_cpu_seconds": spell.cpu_seconds,
        "others_seconds": spell.others_seconds,
        "pilots_share_before": share_between(sampler.readings, began - 0.9, began),
        "pilots_share_during": share_between(sampler.readings, began, ended),
        "pilots_cpu_seconds_during": pilot_seconds_between(sampler.readings, began, ended),
        "daemon_cpu_seconds_during": daemon_during,
        "share_below_limit_after": first_share_below(sampler.readings, began, SHARE_LIMIT),
        "paused_after": None if paused is None else paused - began,
        "sigterm_after_pause": sigterm_after_pause(events, pilots, began),
        "asked_to_stop_after": None if asked is None else asked - began,
        "stopped_after": None if stopped is None else stopped - began,
        "parent_cpu_idle": cpu_idle,
        "timeline": timeline(
            sampler.between(began - 1.0, math.inf), events, began - 1.0, {"owner starts": began, "owner ends": ended}
        ),
    }


def run_reclaim(bench: Bench) -> ScenarioResult:
    """Measure the owner's slowdown with pilots present, Plancton's share of the owner's CPU,
    and how fast the pilots give way, with the benchmark's short timers."""
    return _reclaim(bench, "reclaim", SETTINGS)


def run_reclaim_default_timers(bench: Bench) -> ScenarioResult:
    """Measure the same with Plancton's default timers (main_sleep, pause_delay, grace_kill,
    grace_spawn, vacate_time): within the owner's spell the pilots are paused, not stopped."""
    return _reclaim(bench, "reclaim-default-timers", POOL)


def _reclaim(bench: Bench, scenario: str, base: dict[str, Any]) -> ScenarioResult:
    pairs = 6 if bench.quick else PAIRS
    owner = Owner(bench)
    iterations = owner.iterations_for(OWNER_SECONDS)
    settings = settings_for(bench, base)
    result = ScenarioResult(
        scenario, settings={"plancton": settings, "pairs": pairs, "owner_iterations_per_core": iterations}
    )
    plancton = bench.plancton(scenario, settings)
    alone: list[OwnerRun] = []
    runs: list[dict[str, Any]] = []
    for pair in range(pairs):
        for with_pilots in (pair % 2 == 1, pair % 2 == 0):
            if with_pilots:
                runs.append(_owner_with_pilots(bench, owner, iterations, plancton))
            else:
                alone.append(_owner_alone(bench, owner, iterations, plancton))
    present = [run["owner_seconds"] for run in runs]
    others_alone = [spell.others_seconds for spell in alone]
    others_present = [run["others_seconds"] for run in runs]
    pilots_part, machinery_part = own_share_parts(
        [run["pilots_cpu_seconds_during"] for run in runs],
        others_present,
        others_alone,
        [run["owner_cpu_seconds"] for run in runs],
    )
    own_share = Stats.of([one + other for one, other in zip(pilots_part, machinery_part, strict=True)])
    daemon_part, engine_part = machinery_split(
        machinery_part, [run["daemon_cpu_seconds_during"] for run in runs], [run["owner_cpu_seconds"] for run in runs]
    )
    result.figures = [
        Figure("owner alone", "s", Stats.of([spell.seconds for spell in alone])),
        Figure("owner with pilots present", "s", Stats.of(present)),
        Figure("owner slowdown (paired)", "x", Stats.paired(present, [spell.seconds for spell in alone])),
        Figure(
            "owner alone, one pair to the next (the host's own noise)",
            "x",
            Stats.paired([spell.seconds for spell in alone[1:]], [spell.seconds for spell in alone[:-1]]),
        ),
        Figure("owner CPU time alone", "s", Stats.of([spell.cpu_seconds for spell in alone])),
        Figure("owner CPU time with pilots present", "s", Stats.of([run["owner_cpu_seconds"] for run in runs])),
        Figure(
            "owner CPU time, with pilots / alone (paired)",
            "x",
            Stats.paired([run["owner_cpu_seconds"] for run in runs], [spell.cpu_seconds for spell in alone]),
        ),
        Figure("rest of the host's CPU while the owner runs alone", "s", Stats.of(others_alone)),
        Figure("rest of the host's CPU while the owner runs, pilots present", "s", Stats.of(others_present)),
        Figure(
            "rest of the host's CPU, pilots present - alone (paired)",
            "s",
            Stats.of([present - alone for present, alone in zip(others_present, others_alone, strict=True)]),
        ),
        Figure("pilots' CPU share before the owner", "%", Stats.of([100 * r["pilots_share_before"] for r in runs])),
        Figure("pilots' CPU share while the owner runs", "%", Stats.of([100 * r["pilots_share_during"] for r in runs])),
        Figure(
            "Plancton's share of the owner's CPU: pilots' CPU and the rest of the host's extra / owner's CPU (paired)",
            "%",
            own_share,
            target=f"median <= {TARGET_OWN_SHARE_PERCENT}%",
            met=at_most(own_share.median, TARGET_OWN_SHARE_PERCENT),
        ),
        Figure("of which the pilots' CPU", "%", Stats.of(pilots_part)),
        Figure("of which the engine's and the daemon's (the rest of the host's extra)", "%", Stats.of(machinery_part)),
        Figure("of which the daemon's own CPU", "%", Stats.of(daemon_part)),
        Figure(
            "of which the engine's and anything else's (the rest of the host's extra, less the daemon's)",
            "%",
            Stats.of(engine_part),
        ),
        *_giving_way(runs, settings),
    ]
    errors = plancton.errors_logged()
    result.figures.append(Figure("errors in the daemon's log", "", value=len(errors)))
    result.raw = {
        "daemon_errors": sorted(set(errors))[:10],
        "owner_alone_seconds": [spell.seconds for spell in alone],
        "owner_alone_cpu_seconds": [spell.cpu_seconds for spell in alone],
        "owner_alone_others_seconds": others_alone,
        "runs": [{key: value for key, value in run.items() if key != "timeline"} for run in runs],
        "timeline": runs[-1]["timeline"],
    }
    return result


def _giving_way(runs: list[dict[str, Any]], settings: dict[str, Any]) -> list[Figure]:
    """Return how fast the pilots gave way, against the timers in force: their CPU, their pause,
    and, where grace_kill ends within the owner's spell, their SIGTERM and their end."""
    timers = {key: settings.get(key, default_value(key)) for key in SHORT_TIMERS}
    below = [run["share_below_limit_after"] for run in runs]
    pause_limit = timers["pause_delay"] + PAUSE_LATENESS_SECONDS
    figures = [
        _every_run_within("owner start to pilots' CPU < 10%", below, TARGET_SHARE_SECONDS, f"{TARGET_SHARE_SECONDS} s"),
        _every_run_within(
            "owner start to pilots paused",
            _after(runs, "paused_after"),
            pause_limit,
            f"pause_delay + {PAUSE_LATENESS_SECONDS:g} s = {pause_limit:g} s",
        ),
    ]
    stop_limit = timers["pause_delay"] + timers["grace_kill"] + timers["main_sleep"] + timers["vacate_time"]
    if timers["pause_delay"] + timers["grace_kill"] >= OWNER_SECONDS:
        return figures
    sigterm_limit = timers["grace_kill"] + TIMER_LATENESS_SECONDS
    return [
        *figures,
        _every_run_within(
            "pilot paused to its SIGTERM",
            _after(runs, "sigterm_after_pause"),
            sigterm_limit,
            f"grace_kill + {TIMER_LATENESS_SECONDS:g} s = {sigterm_limit:g} s",
        ),
        _every_run_within(
            "owner start to pilots stopped",
            _after(runs, "stopped_after"),
            stop_limit,
            f"pause_delay + grace_kill + one loop + vacate_time = {stop_limit:g} s",
        ),
    ]


# -- harvest ------------------------------------------------------------------------------


def _back_after(events: Sequence[Event], since: float) -> float | None:
    """Return when all max_docks pilots were running again after ``since`` (None if never)."""
    for when, running, _ in running_over_time(events):
        if when >= since and running >= SETTINGS["max_docks"]:
            return when
    return None


def run_harvest(bench: Bench) -> ScenarioResult:
    """Measure the idle CPU the pilots harvest around a busy spell of the owner."""
    idle, busy = (12.0, 10.0) if bench.quick else (30.0, 30.0)
    settings = settings_for(bench)
    result = ScenarioResult("harvest", settings={"plancton": settings, "idle_seconds": idle, "busy_seconds": busy})
    plancton = bench.plancton("harvest", settings)
    owner = Owner(bench)
    launched = time.time()
    plancton.foreground()
    try:
        with CpuSampler(plancton.cgroup) as sampler:
            _wait_burning(bench, plancton, launched)
            origin = time.time()
            time.sleep(idle)
            spell = owner.busy_for(busy, sampler)
            time.sleep(idle)
            finished = time.time()
    finally:
        plancton.stop()
        plancton.remove_pilots()
    began, ended = spell.began, spell.ended
    readings = sampler.readings
    events = _pilot_events(bench, plancton, launched)
    back = _back_after(events, ended)
    if back is None or back >= finished:
        raise BenchError(f"the pilots were not back within {idle:g} s of idleness after the owner stopped")
    first_idle = pilot_seconds_between(readings, origin, began)
    second_idle = pilot_seconds_between(readings, back, finished)
    allowed = (began - origin) + (finished - back)
    harvested = (first_idle + second_idle) / (CEILING_CORES * allowed)
    all_idle = (first_idle + pilot_seconds_between(readings, ended, finished)) / (
        CEILING_CORES * ((began - origin) + (finished - ended))
    )
    # grace_spawn counts from the loop that saw the owner idle again, which the log dates
    seen_idle = [when for when in plancton.logged_at(IDLE_AGAIN) if when >= ended]
    grace_end = min(seen_idle) + SETTINGS["grace_spawn"] if seen_idle else math.nan
    dead = [event.time for event in events if event.action == "die" and began <= event.time <= ended]
    result.figures = [
        Figure(
            "idle CPU harvested / ceiling, pilots allowed",
            "%",
            value=100 * harvested,
            target=f">= {100 * TARGET_HARVEST:.0f}%",
            met=at_least(harvested, TARGET_HARVEST),
        ),
        Figure("first idle phase", "%", value=100 * first_idle / (CEILING_CORES * (began - origin))),
        Figure(
            "second idle phase, once pilots are back",
            "%",
            value=100 * second_idle / (CEILING_CORES * (finished - back)),
        ),
        Figure("all idle time, grace_spawn included", "%", value=100 * all_idle),
        Figure("pilots' CPU share while the owner is busy", "%", value=100 * share_between(readings, began, ended)),
        Figure("owner start to pilots stopped", "s", value=max(dead) - began if dead else math.nan),
        Figure("owner end to pilots back", "s", value=back - ended),
        Figure("owner end to the daemon seeing it idle", "s", value=grace_end - SETTINGS["grace_spawn"] - ended),
        Figure(
            "grace_spawn end to pilots back",
            "s",
            value=back - grace_end,
            target=f"<= {BACK_LATENESS_SECONDS:g} s",
            met=at_most(back - grace_end, BACK_LATENESS_SECONDS),
        ),
    ]
    errors = plancton.errors_logged()
    result.figures.append(Figure("errors in the daemon's log", "", value=len(errors)))
    marks = {"owner starts": began, "owner ends": ended, "pilots back": back}
    result.raw = {
        "daemon_errors": sorted(set(errors))[:10],
        "timeline": timeline(sampler.between(origin, math.inf), events, origin, marks),
        "ceiling_cores": CEILING_CORES,
    }
    return result


# -- reclaim by the installed service -------------------------------------------------------


def run_reclaim_installed(bench: Bench) -> ScenarioResult:
    """Measure, in one run, how the service that ./install sets up (running as its own user)
    and a daemon run as root give the CPU back: the owner alone, with the installed service's
    pilots, and with root's, in turns. Where systemd does not run, only root can give the
    pilots' parent cgroup the lowest CPU weight; ./install does it for the service."""
    turns = 4 if bench.quick else INSTALLED_TURNS
    owner = Owner(bench)
    iterations = owner.iterations_for(OWNER_SECONDS)
    settings = settings_for(bench)
    result = ScenarioResult(
        "reclaim-installed", settings={"plancton": settings, "turns": turns, "owner_iterations_per_core": iterations}
    )
    installed = InstalledPlancton(bench, bench.instance_name("installed"), settings)
    daemons = {"installed": installed, "root": bench.plancton("root", settings)}
    alone: list[OwnerRun] = []
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in daemons}
    try:
        install_lines = [line for line in installed.install().splitlines() if "cgroup" in line]
        for turn in range(turns):
            order = ["alone", *daemons]
            for which in order[turn % 3 :] + order[: turn % 3]:
                if which == "alone":
                    alone.append(_owner_alone(bench, owner, iterations, daemons["root"]))
                else:
                    runs[which].append(_owner_with_pilots(bench, owner, iterations, daemons[which]))
        logs = {name: _daemon_log(daemon) for name, daemon in daemons.items()}
    finally:
        installed.uninstall()
    result.figures = [Figure("owner alone", "s", Stats.of([spell.seconds for spell in alone]))]
    for name in daemons:
        result.figures += _yield_figures(name, runs[name], alone)
    result.figures += _installed_beside_root(runs["installed"], runs["root"], logs["installed"])
    result.raw = {
        "install_lines": install_lines,
        "cgroup_lines": {name: [line for line in log if "cgroup" in line][:4] for name, log in logs.items()},
        "owner_alone_seconds": [spell.seconds for spell in alone],
        "runs": {name: [{k: v for k, v in run.items() if k != "timeline"} for run in runs[name]] for name in runs},
    }
    return result


def _daemon_log(plancton: Plancton) -> list[str]:
    try:
        with open(os.path.join(plancton.logdir, "plancton.log"), encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()
    except OSError:
        return []


def _yield_figures(name: str, runs: Sequence[dict[str, Any]], alone: Sequence[OwnerRun]) -> list[Figure]:
    """Return how the owner fared beside one daemon's pilots, and how fast they gave way."""
    return [
        Figure(
            f"{name}: owner slowdown (paired)",
            "x",
            Stats.paired([run["owner_seconds"] for run in runs], [spell.seconds for spell in alone]),
        ),
        Figure(
            f"{name}: owner start to pilots' CPU < 10%", "s", Stats.of([r["share_below_limit_after"] for r in runs])
        ),
        Figure(
            f"{name}: pilots' CPU share while the owner runs",
            "%",
            Stats.of([100 * r["pilots_share_during"] for r in runs]),
        ),
    ]


def _installed_beside_root(
    installed: Sequence[dict[str, Any]], root: Sequence[dict[str, Any]], log: Sequence[str]
) -> list[Figure]:
    """Return the installed service's figures over root's, held to :data:`TARGET_INSTALLED`."""
    owner = Stats.paired([run["owner_seconds"] for run in installed], [run["owner_seconds"] for run in root])
    below = [Stats.of([run["share_below_limit_after"] for run in runs]).median for runs in (installed, root)]
    warnings = [line for line in log if "cannot give the pilots the lowest CPU weight" in line]
    target = f"<= {TARGET_INSTALLED}x"
    return [
        Figure(
            "owner's time beside the installed service's pilots / root's (paired)",
            "x",
            owner,
            target=f"median {target}",
            met=at_most(owner.median, TARGET_INSTALLED),
        ),
        Figure(
            "owner start to pilots' CPU < 10%, installed / root (medians)",
            "x",
            value=below[0] / below[1],
            target=target,
            met=at_most(below[0] / below[1], TARGET_INSTALLED),
        ),
        Figure(
            "installed service's warnings of the default CPU weight",
            "",
            value=len(warnings),
            target="0",
            met=not warnings,
        ),
    ]
