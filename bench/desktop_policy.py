"""Desktop policy: HTCondor's own way of sharing a desktop, side by side with Plancton's.

A site that wants its desktops in an HTCondor pool without Plancton runs a plain startd on
each one with HTCondor's desktop policy (``use POLICY : Desktop``), which suspends the jobs
when someone uses the keyboard or when the owner loads the CPU. In HTCondor 23.9 (the
example's image) the template expands to::

    START    = (KeyboardIdle > 15 * 60) && ((LoadAvg - CondorLoadAvg) <= 0.3
               || (State != "Unclaimed" && State != "Owner"))
    SUSPEND  = (KeyboardIdle < 60) || (CpuBusyTimer > 120 && ActivationTimer > 90)
    CONTINUE = (LoadAvg - CondorLoadAvg) <= 0.3 && ActivityTimer > 10 && KeyboardIdle > 5 * 60
    PREEMPT  = (Activity == "Suspended" && ActivityTimer > 10 * 60) || (SUSPEND && !WANT_SUSPEND)
    WANT_SUSPEND = (SmallJob || KeyboardNotBusy || IsVanilla) && SUSPEND
    KILL = False, MaxJobRetirementTime = 0, CLAIM_WORKLIFE unset

where CpuBusyTimer counts from when ``(LoadAvg - CondorLoadAvg) >= 0.5`` last became true
(HighLoad 0.5, BackgroundLoad 0.3, both on the one-minute load average, which HTCondor shares
out among the slots one core at a time). So a key press suspends the jobs at the startd's
next poll, and they go on once the keyboard has been idle for 5 minutes (ContinueIdleTime);
an owner's CPU load suspends them once it has held for 2 minutes (CpuBusyTime) and the job
has run for 90 s, and they go on once the load average has fallen back; a job suspended
for 10 minutes (MaxSuspendTime) is evicted; a new job starts only after 15 minutes without a
key press (StartIdleTime). HTCondor's JOB_RENICE_INCREMENT is 0 there: the jobs run at the
owner's priority. The scenario keeps these thresholds as the template has them.

Three setups, each against a fresh pool (:mod:`tests.support.htcondor_pool`) from the example's
image, each with one CPU-burning job per core of the host:

- desktop policy, HTCondor's intervals: one plain startd in the very container Plancton would
  make (:func:`bench.htcondor.start_startds`) but with the engine's default CPU weight and all
  the host's cores, ``NUM_CPUS`` static slots of one CPU, and :func:`desktop_config` bound in
  as /etc/condor/config.d/60-desktop.conf (after the image's pilot configuration: the policy's
  START replaces the pilot's, the single-shot shutdown is off), with ``POLLING_INTERVAL`` 5 s
  and ``UPDATE_INTERVAL`` 300 s as HTCondor ships them;
- desktop policy, shortest intervals: the same with both at 1 s, the least HTCondor takes
  (whole seconds; the startd raises an UPDATE_INTERVAL under 1 to 1);
- Plancton: the example configuration with multi-job pilots (:data:`bench.htcondor.MULTI_JOB`),
  ``max_docks`` = cores, and Plancton's own timers (main_sleep 5 s, pause_delay 5 s,
  grace_kill 120 s, grace_spawn 60 s, the owner busy at 40% of the host), with
  ``input_idle: 3m`` as ``./install --workstation`` writes it.

The keyboard: the startd reads KeyboardIdle from the access time of the devices named in
CONSOLE_DEVICES, here a file of the run bound in as /dev/plancton-keyboard, whose access time
starts an hour back; Plancton reads logind's idle hint, here dbusmock's logind on a private
bus (:mod:`tests.support.logind_mock`). A key press touches the file and turns the hint false
at the same moment, in every setup; a second later the person is away again (the hint true,
idle since the key press), and stays away.

In each setup, in this order:

1. throughput, owner away: once every slot will start a job, 2 x cores jobs of 60 s, from
   their submission to the last one's termination (as :func:`bench.htcondor.timed_jobs`);
2. CPU burst: with a long job burning each core, the benchmark's owner
   (:class:`bench.reclaim.Owner`) burns every core for a fixed amount of work, :data:`OWNER_SECONDS`
   alone on this host; from its start to the jobs' CPU under 0.1 core, and from its end to the
   jobs' CPU above half their ceiling (cores); its time against the owner alone (once per
   round, before the setups), the slowdown;
3. keyboard: a key press, then the person stays away; from the press to the jobs' CPU under
   0.1 core, and to their CPU above half their ceiling again.

The jobs' CPU is that of the setup's containers, read from their parent cgroup every 0.5 s.
A run takes 40 to 45 minutes with ``--quick`` (one round) on the 2-core test machine, and takes about
twice that without (two rounds, the setups in turns). With HTCondor's intervals a startd
whose START is false when it comes up (its own start-up loads the host) looks at it again
only at its next update, 300 s later, and the jobs wait for that. Every pool, container,
cgroup, bus, process, file and image the scenario makes is removed at its end.
"""

import contextlib
import itertools
import math
import os
import secrets
import tempfile
import time
import unittest.mock
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker

from bench.cpu import CpuReading, CpuSampler, cores
from bench.engine import BENCH_LABEL
from bench.errors import BenchError
from bench.harness import IDLE_OWNER, Bench
from bench.htcondor import MULTI_JOB, example_config, example_image, settings, start_startds, timed_jobs
from bench.reclaim import NCPUS, Owner, OwnerRun
from bench.stats import Figure, ScenarioResult, Stats, ratio_figure
from plancton.config.schema import default_value
from tests.support import logind_mock, services
from tests.support.htcondor_pool import Pool

#: The file that stands for the keyboard, under /dev in the desktop startd's container.
KEYBOARD_DEVICE = "plancton-keyboard"
#: How long ago the person last touched the keyboard when a setup starts (StartIdleTime: 15 min).
AWAY_SECONDS = 3600.0
#: HTCondor's intervals as it ships them (the image's pilot configuration shortens UPDATE_INTERVAL).
SHIPPED_INTERVALS = {"POLLING_INTERVAL": 5, "UPDATE_INTERVAL": 300}
#: The shortest intervals HTCondor takes.
SHORTEST_INTERVALS = {"POLLING_INTERVAL": 1, "UPDATE_INTERVAL": 1}
DESKTOP_SETUPS = {
    "desktop policy, HTCondor's intervals": SHIPPED_INTERVALS,
    "desktop policy, shortest intervals": SHORTEST_INTERVALS,
}
PLANCTON = "Plancton"
#: Memory per slot, as the example gives each pilot.
SLOT_MEMORY_MB = 2048
#: The owner's work alone on this host: long enough for the desktop policy's 2 minutes of load.
OWNER_SECONDS = 150.0
THROUGHPUT_JOB_SECONDS = 60.0
#: The jobs that run through the owner's events: longer than all of them.
LONG_JOB_SECONDS = 7200.0
#: The jobs' CPU counts as given back under this many cores, and as back above this share of
#: their ceiling.
GIVEN_BACK_CORES = 0.1
BACK_SHARE = 0.5
#: The jobs count as burning above this share of their ceiling.
BURNING_SHARE = 0.8
SAMPLE_SECONDS = 0.5
#: Plancton's input_idle as ``./install --workstation`` writes it (docs/workstations.md).
INPUT_IDLE = "3m"
TARGET_RECLAIM_RATIO = 10.0
TARGET_THROUGHPUT_RATIO = 0.95
#: Bounds on waits, so that a broken setup fails instead of hanging; they measure nothing.
STARTABLE_TIMEOUT_SECONDS = 600.0
BURNING_TIMEOUT_SECONDS = 300.0
KEY_PRESS_TIMEOUT_SECONDS = 120.0
BACK_TIMEOUT_SECONDS = 1200.0
#: What :func:`measure` measures in one setup.
MEASURES = ("jobs_per_minute", "owner_seconds", "burst_given_back", "burst_back", "key_given_back", "key_back")
#: The expressions of the desktop policy recorded with the results, as the startd reads them.
POLICY_MACROS = ("START", "SUSPEND", "CONTINUE", "PREEMPT", "WANT_SUSPEND", "JOB_RENICE_INCREMENT")


def desktop_config(slots: int, device: str, intervals: Mapping[str, int]) -> str:
    """Given the number of one-CPU slots, the keyboard's device name under /dev and HTCondor's
    intervals, return the startd's configuration file: HTCondor's desktop policy over the
    image's pilot configuration, with no shutdown after its jobs."""
    lines = [
        "# HTCondor's desktop policy on a plain startd (loaded after 50-plancton.conf)",
        "use POLICY : Desktop",
        f"NUM_CPUS = {slots}",
        f"MEMORY = {slots * SLOT_MEMORY_MB}",
        f"NUM_SLOTS = {slots}",
        f"NUM_SLOTS_TYPE_1 = {slots}",
        "SLOT_TYPE_1 = cpus=1",
        "SLOT_TYPE_1_PARTITIONABLE = False",
        "# a desktop's startd runs job after job and stays",
        "PLANCTON_PILOT_JOBS = 1000000000",
        "STARTD.DAEMON_SHUTDOWN = False",
        "MASTER.DAEMON_SHUTDOWN = False",
        "STARTD_NOCLAIM_SHUTDOWN = 1000000000",
        f"CONSOLE_DEVICES = {device}",
        *(f"{name} = {value}" for name, value in intervals.items()),
    ]
    return "\n".join(lines) + "\n"


# -- analysis -----------------------------------------------------------------------------


def first_time(readings: Sequence[CpuReading], since: float, until: float, limit: float, below: bool) -> float:
    """Return the seconds from ``since`` to the end of the first sampling interval after it,
    ending by ``until``, in which the jobs used fewer cores than ``limit`` (``below``) or more
    (not ``below``); nan when none did."""
    for before, after in itertools.pairwise(readings):
        if before.time < since or after.time > until:
            continue
        used = cores(before, after)[0]
        if (used < limit) if below else (used > limit):
            return after.time - since
    return math.nan


# -- one setup ----------------------------------------------------------------------------


class Keyboard:
    """The person at the host: a file that stands for the keyboard (its access time) and
    logind's idle hint on the run's private bus."""

    def __init__(self, path: str, set_idle: Callable[[bool, float], None]) -> None:
        self.path = path
        self.set_idle = set_idle
        Path(path).touch()

    def away(self) -> None:
        """The person has been away for :data:`AWAY_SECONDS`."""
        since = time.time() - AWAY_SECONDS
        os.utime(self.path, (since, since))
        self.set_idle(True, since)

    def press(self) -> float:
        """A key press, after which the person goes away again; return its time."""
        pressed = time.time()
        os.utime(self.path, (pressed, pressed))
        self.set_idle(False, pressed)
        time.sleep(1.0)  # the change reaches logind's followers before the person leaves
        self.set_idle(True, pressed)
        return pressed


def wait_cores(sampler: CpuSampler, since: float, limit: float, below: bool, timeout: float) -> float:
    """Wait until the jobs' CPU crosses ``limit`` cores after ``since``; return the seconds
    from ``since`` (nan if it did not within ``timeout`` seconds)."""
    deadline = since + timeout
    while True:
        seconds = first_time(sampler.readings, since, math.inf, limit, below)
        if not math.isnan(seconds) or time.time() > deadline:
            return seconds
        time.sleep(SAMPLE_SECONDS)


def wait_burning(sampler: CpuSampler) -> None:
    """Wait until the jobs burn nearly every core.

    Raises:
        BenchError: they did not within :data:`BURNING_TIMEOUT_SECONDS`.
    """
    limit = BURNING_SHARE * NCPUS
    if math.isnan(wait_cores(sampler, time.time(), limit, below=False, timeout=BURNING_TIMEOUT_SECONDS)):
        raise BenchError(f"the jobs did not burn {limit:g} cores within {BURNING_TIMEOUT_SECONDS:g} s")


def wait_startable(pool: Pool) -> None:
    """Wait until every slot of the pool would start a job (its START is true).

    Raises:
        BenchError: they did not within :data:`STARTABLE_TIMEOUT_SECONDS` (the desktop policy
            starts jobs only while the host's load average, less HTCondor's, is under 0.3).
    """

    def startable() -> bool:
        # "false" while the policy holds a slot back (a pilot's START may need a job to say more)
        return sum(start != "false" for start in pool.pilot_slot_attribute("Start")) >= NCPUS

    try:
        # every 5 s: each query is a process in the manager, and the policy reads the load
        services.poll(startable, STARTABLE_TIMEOUT_SECONDS, f"{NCPUS} slots whose START is true", 5.0)
    except services.WaitTimeout as error:
        raise BenchError(f"{error} (load average {os.getloadavg()[0]:.2f})") from None


def measure(pool: Pool, sampler: CpuSampler, owner: Owner, iterations: int, keyboard: Keyboard) -> dict[str, Any]:
    """Run the throughput, the CPU burst and the key press through a running setup; return
    what they measured."""
    wait_startable(pool)
    throughput = timed_jobs(pool, 2 * NCPUS, THROUGHPUT_JOB_SECONDS, NCPUS, burn=True)
    pool.submit(NCPUS, LONG_JOB_SECONDS, burn=True)
    wait_burning(sampler)
    spell: OwnerRun = owner.work(iterations, sampler)
    ceiling_half = BACK_SHARE * NCPUS
    burst_back = wait_cores(sampler, spell.ended, ceiling_half, below=False, timeout=BACK_TIMEOUT_SECONDS)
    wait_burning(sampler)
    pressed = keyboard.press()
    key_given = wait_cores(sampler, pressed, GIVEN_BACK_CORES, below=True, timeout=KEY_PRESS_TIMEOUT_SECONDS)
    given = pressed if math.isnan(key_given) else pressed + key_given
    key_back = wait_cores(sampler, given, ceiling_half, below=False, timeout=BACK_TIMEOUT_SECONDS)
    return {
        "jobs_per_minute": throughput,
        "owner_seconds": spell.seconds,
        "burst_given_back": first_time(sampler.readings, spell.began, spell.ended, GIVEN_BACK_CORES, below=True),
        "burst_back": burst_back,
        "key_given_back": key_given,
        "key_back": given - pressed + key_back,
    }


def run_desktop(
    bench: Bench, image: str, intervals: Mapping[str, int], owner: Owner, iterations: int, keyboard: Keyboard
) -> tuple[dict[str, Any], dict[str, str]]:
    """Run one setup of the desktop policy; return its measures and the policy's expressions
    as its startd reads them."""
    folder = tempfile.mkdtemp(prefix="desktop-", dir=bench.workdir)
    pool = Pool.start(image, os.path.join(folder, "pool"))
    tag = f"desktop-{secrets.token_hex(3)}"
    config = os.path.join(folder, "60-desktop.conf")
    Path(config).write_text(desktop_config(NCPUS, KEYBOARD_DEVICE, intervals), encoding="ascii")
    keyboard.away()
    try:
        raw = settings(pool, image)
        keep = {"_condor_CONDOR_HOST"}
        raw["environment"] = {name: value for name, value in raw["environment"].items() if name in keep}
        raw["binds"] += [
            f"{config}:/etc/condor/config.d/60-desktop.conf",
            f"{keyboard.path}:/dev/{KEYBOARD_DEVICE}",
        ]
        raw["cpus_per_dock"] = NCPUS
        raw["max_dock_mem"] = f"{NCPUS * SLOT_MEMORY_MB // 1024}G"
        (container,) = start_startds(bench, raw, tag, 1, engine_weight=True)
        policy = {name: condor_config_val(bench, container, name) for name in POLICY_MACROS}
        with CpuSampler(bench.pilot_cgroup(f"bench_{bench.run_id}_{tag}"), SAMPLE_SECONDS) as sampler:
            return measure(pool, sampler, owner, iterations, keyboard), policy
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            bench.remove_containers(f"{BENCH_LABEL}={bench.baseline_tag(tag)}")
        pool.stop()


def condor_config_val(bench: Bench, container: str, name: str) -> str:
    """Return a configuration value as HTCondor reads it in a running container."""
    execution = bench.api.exec_create(container, ["condor_config_val", name])
    return str(bench.api.exec_start(execution["Id"]).decode(errors="replace").strip())


def plancton_settings(pool: Pool, image: str) -> dict[str, Any]:
    """Return the example's configuration with multi-job pilots, one per core, Plancton's own
    timers and owner thresholds (as the example sets them, or the defaults) and the keyboard."""
    example = example_config()
    restored = {key: example.get(key, default_value(key)) for key in (*IDLE_OWNER, "main_sleep", "vacate_time")}
    return {**settings(pool, image, MULTI_JOB), **restored, "max_docks": NCPUS, "input_idle": INPUT_IDLE}


def run_plancton(bench: Bench, image: str, owner: Owner, iterations: int, keyboard: Keyboard) -> dict[str, Any]:
    """Run the Plancton setup; return its measures."""
    pool = Pool.start(image, os.path.join(tempfile.mkdtemp(prefix="plancton-", dir=bench.workdir), "pool"))
    keyboard.away()
    plancton = None
    try:
        plancton = bench.plancton("desktop", plancton_settings(pool, image))
        with CpuSampler(plancton.cgroup, SAMPLE_SECONDS) as sampler:
            plancton.foreground()
            return measure(pool, sampler, owner, iterations, keyboard)
    finally:
        if plancton is not None:
            plancton.stop()
            plancton.remove_pilots()
        pool.stop()


@contextlib.contextmanager
def person(bench: Bench) -> Iterator[Keyboard]:
    """Run logind on a private bus for the whole scenario (the daemons' bus); yield the
    keyboard."""
    if logind_mock.MISSING:
        raise BenchError(logind_mock.MISSING)
    folder = Path(tempfile.mkdtemp(prefix="bus-", dir=bench.workdir))
    with (
        logind_mock.system_bus(folder) as bus,
        logind_mock.running_logind(bus, folder / "dbusmock.log") as set_idle,
        unittest.mock.patch.dict(os.environ, {"DBUS_SYSTEM_BUS_ADDRESS": bus}),
    ):
        keyboard = Keyboard(str(folder / "keyboard"), set_idle)
        keyboard.away()
        yield keyboard


# -- the scenario -------------------------------------------------------------------------


def run(bench: Bench) -> ScenarioResult:
    """Measure HTCondor's desktop policy (two sets of intervals) and Plancton side by side:
    throughput with the owner away, a CPU burst of the owner and a key press."""
    rounds = 1 if bench.quick else 2
    setups = [*DESKTOP_SETUPS, PLANCTON]
    measures: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    alone: list[float] = []
    policies: dict[str, dict[str, str]] = {}
    owner = Owner(bench)
    iterations = owner.iterations_for(OWNER_SECONDS)
    errors: list[str] = []
    with example_image(bench) as image, person(bench) as keyboard:
        for turn in range(rounds):
            alone.append(owner.work(iterations).seconds)
            for name in setups[turn % len(setups) :] + setups[: turn % len(setups)]:
                # a setup that fails leaves the others' figures, and says why in the result
                try:
                    if name == PLANCTON:
                        measures[name].append(run_plancton(bench, image, owner, iterations, keyboard))
                    else:
                        found, policies[name] = run_desktop(
                            bench, image, DESKTOP_SETUPS[name], owner, iterations, keyboard
                        )
                        measures[name].append(found)
                except (BenchError, RuntimeError, docker.errors.DockerException) as error:
                    errors.append(f"{name}, round {turn + 1}: {error}")
                    measures[name].append(dict.fromkeys(MEASURES, math.nan))
    figures = [Figure("owner alone", "s", Stats.of(alone))]
    for name in setups:
        figures += setup_figures(name, measures[name], alone)
    for name in DESKTOP_SETUPS:
        figures += comparison_figures(name, measures[name], measures[PLANCTON])
    renice = {name: policy.get("JOB_RENICE_INCREMENT", "") for name, policy in policies.items()}
    return ScenarioResult(
        "desktop-policy",
        figures=figures,
        settings={
            "cores": NCPUS,
            "rounds": rounds,
            "owner_seconds_alone": OWNER_SECONDS,
            "owner_iterations_per_core": iterations,
            "throughput_jobs": 2 * NCPUS,
            "throughput_job_seconds": THROUGHPUT_JOB_SECONDS,
            "desktop_intervals": DESKTOP_SETUPS,
            "desktop_job_renice_increment": renice,
            "desktop_policy": policies,
            "plancton_input_idle": INPUT_IDLE,
            "plancton_multi_job_environment": MULTI_JOB,
        },
        raw={"measures": measures, "owner_alone_seconds": alone, "load_average_at_end": os.getloadavg()},
        error="; ".join(errors) or None,
    )


def setup_figures(name: str, runs: Sequence[Mapping[str, Any]], alone: Sequence[float]) -> list[Figure]:
    """Return one setup's figures."""

    def of(key: str) -> list[float]:
        return [float(run[key]) for run in runs]

    burst = Stats.of(of("burst_given_back"))
    return [
        Figure(
            f"{name}: jobs per minute, {THROUGHPUT_JOB_SECONDS:g} s jobs, owner away",
            "jobs/min",
            Stats.of(of("jobs_per_minute")),
        ),
        Figure(f"{name}: CPU burst, owner start to jobs' CPU < {GIVEN_BACK_CORES:g} core", "s", burst),
        Figure(
            f"{name}: CPU burst, runs with jobs' CPU never < {GIVEN_BACK_CORES:g} core during the owner's work",
            "",
            value=burst.missing,
        ),
        Figure(f"{name}: CPU burst, owner's slowdown (paired)", "x", Stats.paired(of("owner_seconds"), alone)),
        Figure(
            f"{name}: CPU burst, owner gone to jobs' CPU > {BACK_SHARE:.0%} of ceiling", "s", Stats.of(of("burst_back"))
        ),
        Figure(f"{name}: key press to jobs' CPU < {GIVEN_BACK_CORES:g} core", "s", Stats.of(of("key_given_back"))),
        Figure(
            f"{name}: key press to jobs' CPU > {BACK_SHARE:.0%} of ceiling (person away since)",
            "s",
            Stats.of(of("key_back")),
        ),
    ]


def comparison_figures(
    name: str, desktop: Sequence[Mapping[str, Any]], plancton: Sequence[Mapping[str, Any]]
) -> list[Figure]:
    """Return the ratios of one desktop-policy setup and Plancton, held to their targets."""

    def pair(key: str) -> tuple[list[float], list[float]]:
        return [float(run[key]) for run in desktop], [float(run[key]) for run in plancton]

    slow, fast = pair("burst_given_back")
    theirs, ours = pair("jobs_per_minute")
    return [
        ratio_figure(
            f"{name} / Plancton: CPU burst, owner start to jobs' CPU < {GIVEN_BACK_CORES:g} core",
            slow,
            fast,
            TARGET_RECLAIM_RATIO,
        ),
        ratio_figure(f"Plancton / {name}: jobs per minute, owner away", ours, theirs, TARGET_THROUGHPUT_RATIO),
    ]
