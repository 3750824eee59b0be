"""Pool scale: one HTCondor central manager's negotiation cycle, and the jobs per minute it
hands to Plancton's single-shot pilots, as its pool grows to tens of thousands of slots.

A pool of :mod:`tests.support.htcondor_pool` (a central manager with a schedd, HTCondor 23.9)
gets simulated slots: startd ads sent to its collector with ``condor_advertise -multiple
UPDATE_STARTD_AD`` from one file, level after level (``LEVELS``: the first is none, the pilots
alone). Each is an Unclaimed static slot of one CPU, as a pilot's, that lives an hour in the
collector (its ``ClassAdLifetime``; the scenario ends well before) and offers 1 MB of memory:
the benchmark's jobs ask for 64 MB, so their requirements exclude it. Such a slot costs the
negotiator, in every cycle, what any slot without a job for it costs: fetched from the
collector, sorted, counted in the accounting and tried against each idle job's requirements,
but never matched. Simulated slots that matched would take the jobs from the pilots: the
schedd would try to claim them at an address where no startd answers, and the figures would be
those of failed claims, not of the pool.

At each level, ``WORKERS`` of Plancton's single-shot pilots (bench.htcondor's configuration of
the example: one job per pilot, then a fresh pilot) run rounds of short jobs, timed from their
submission to the last one's termination as the submitter's event log has them: the jobs per
minute, and the time each job costs a pilot beyond its own run (its turnover: the startd's
shutdown, a new container, a new startd joining the pool, the wait for a negotiation cycle and
the cycle itself, the schedd's claim). The negotiation cycles are read from the negotiator's
own log, timed to the millisecond (``D_SUB_SECOND``; the negotiator's ad gives whole seconds):
each from its "Started" to its "Finished" line, counted at the level that its "Public ads
include ... startd" line names (the simulated slots and up to ``WORKERS`` pilots'), idle jobs
or not, as the pool runs them.

The pool negotiates every 2 s, as the tests' pools do. A second pool, at HTCondor's default
interval of 20 s, runs the same jobs at the lowest and highest level, for what a faster
interval is worth. Not in the figures: simulated slots never send updates (a real startd sends
one every UPDATE_INTERVAL, 300 s by default), so the collector's load from updates is not
measured; and two pilots are matched at a time, not hundreds. Every pool, pilot and image the
scenario makes is removed at its end.
"""

import datetime
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.errors import BenchError
from bench.harness import Bench
from bench.htcondor import WAIT_TIMEOUT_SECONDS, WORKERS, example_image, settings
from bench.stats import Figure, ScenarioResult, Stats, percentile
from tests.support import services
from tests.support.htcondor_pool import SUBMITTER, Pool

#: Simulated slots at each level, in turn (a quick run: none, then 2000).
LEVELS = (0, 500, 2000, 5000, 10000, 20000, 50000)
QUICK_LEVELS = (0, 2000)
#: The pool's negotiation interval, and HTCondor's default one, in seconds.
FAST_INTERVAL = 2
DEFAULT_INTERVAL = 20
JOB_SECONDS = 2.0
#: Every simulated slot carries this attribute, true, so that the collector can count them.
SIMULATED = "PlanctonSimulatedSlot"
#: How long the collector keeps a simulated slot (ClassAdLifetime), in seconds.
AD_LIFETIME_SECONDS = 3600
#: Memory a simulated slot offers, in MB: less than the jobs' request_memory (64).
SIMULATED_MEMORY_MB = 1
ADS_FILE = "simulated-slots.ad"
#: A pilot's slot that takes a job: it has run none and read the drain deadline (pilot.conf).
FRESH_PILOT = (
    'PLANCTON_PILOT =?= true && State == "Unclaimed" && (JobStarts ?: 0) == 0 && PlanctonShutdownTimeRead =?= true'
)
PILOTS_TIMEOUT_SECONDS = 120.0
ADVERTISE_TIMEOUT_SECONDS = 120.0
#: A line of the negotiator's log with D_SUB_SECOND: its time, then its message.
LOG_LINE = re.compile(r"^(\d\d/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}) (.*)$")
LOG_TIME = "%m/%d/%y %H:%M:%S.%f"
PUBLIC_ADS = re.compile(r"Public ads include \d+ submitters?, (\d+) startds?")
MATCHED = re.compile(r"\bMatched \d+\.\d+ ")


@dataclass(frozen=True)
class Cycle:
    """One negotiation cycle: its length, the startd ads it had, and the jobs it matched."""

    seconds: float
    startds: int
    matches: int


def slot_ads(count: int, address: str, uid_domain: str) -> str:
    """Given a number of slots, the manager's address and the pool's UID_DOMAIN, return the
    startd ads of as many simulated slots, for ``condor_advertise -multiple``: Unclaimed static
    slots of one CPU, too small in memory for the benchmark's jobs, each with a name of its own."""
    ads = []
    for number in range(count):
        machine = f"simulated-{number:05d}.pool-scale"
        ads.append(
            "\n".join(
                (
                    'MyType = "Machine"',
                    'TargetType = "Job"',
                    f'Name = "slot1@{machine}"',
                    f'Machine = "{machine}"',
                    # never contacted: no job matches the slot
                    f'MyAddress = "<{address}:9>"',
                    f'StartdIpAddr = "<{address}:9>"',
                    'State = "Unclaimed"',
                    'Activity = "Idle"',
                    'SlotType = "Static"',
                    "SlotID = 1",
                    "Cpus = 1",
                    f"Memory = {SIMULATED_MEMORY_MB}",
                    "Disk = 1000000",
                    'Arch = "X86_64"',
                    'OpSys = "LINUX"',
                    "HasFileTransfer = true",
                    "START = true",
                    "Requirements = START",
                    "Rank = 0.0",
                    "CurrentRank = 0.0",
                    f'UidDomain = "{uid_domain}"',
                    f'FileSystemDomain = "{machine}"',
                    f"ClassAdLifetime = {AD_LIFETIME_SECONDS}",
                    f"{SIMULATED} = true",
                )
            )
        )
    return "".join(ad + "\n\n" for ad in ads)


def parse_cycles(text: str) -> list[Cycle]:
    """Given the text of a negotiator's log with D_SUB_SECOND times, return its complete
    cycles in order; a cycle whose log does not say how many startd ads it had is left out."""
    cycles = []
    started: datetime.datetime | None = None
    startds: int | None = None
    matches = 0
    for line in text.splitlines():
        found = LOG_LINE.match(line)
        if found is None:
            continue
        when, message = datetime.datetime.strptime(found.group(1), LOG_TIME), found.group(2)
        if "Started Negotiation Cycle" in message:
            started, startds, matches = when, None, 0
        elif started is None:
            continue
        elif (public := PUBLIC_ADS.search(message)) is not None:
            startds = int(public.group(1))
        elif MATCHED.search(message):
            matches += 1
        elif "Finished Negotiation Cycle" in message:
            if startds is not None:
                cycles.append(Cycle((when - started).total_seconds(), startds, matches))
            started = None
    return cycles


def cycles_at(cycles: Sequence[Cycle], slots: int, pilots: int = WORKERS) -> list[Cycle]:
    """Return the cycles that had ``slots`` simulated slots, with up to ``pilots`` pilots'."""
    return [cycle for cycle in cycles if slots <= cycle.startds <= slots + pilots]


def jobs_per_minute(jobs: int, elapsed: float) -> float:
    """Return the jobs per minute of ``jobs`` jobs done in ``elapsed`` seconds."""
    return jobs * 60.0 / elapsed


def turnover(jobs: int, elapsed: float, job_seconds: float, pilots: int = WORKERS) -> float:
    """Given jobs of ``job_seconds`` run one after the other by ``pilots`` pilots side by side
    in ``elapsed`` seconds, return the time each job cost a pilot beyond its own run."""
    return pilots * elapsed / jobs - job_seconds


def simulated_slots(pool: Pool) -> int:
    """Return how many simulated slots the pool's collector lists."""
    return len(pool.run("condor_status", "-constraint", f"{SIMULATED} =?= true", "-af", "Name").split())


def advertise(pool: Pool, slots: int, uid_domain: str) -> None:
    """Send ``slots`` simulated slots to the pool's collector (the first ones again, if it
    has them) and wait until it lists them all.

    Raises:
        BenchError: it did not list them in time.
    """
    if slots:
        with open(os.path.join(pool.submit_folder, ADS_FILE), "w", encoding="ascii") as handle:
            handle.write(slot_ads(slots, pool.address, uid_domain))
        pool.run("condor_advertise", "-tcp", "-multiple", "UPDATE_STARTD_AD", f"/home/{SUBMITTER}/{ADS_FILE}")
    try:
        services.poll(lambda: simulated_slots(pool) >= slots, ADVERTISE_TIMEOUT_SECONDS, f"{slots} simulated slots")
    except services.WaitTimeout as error:
        raise BenchError(str(error)) from None


def fresh_pilots(pool: Pool) -> int:
    """Return how many pilots' slots the collector lists that would take a job now."""
    return len(pool.run("condor_status", "-constraint", FRESH_PILOT, "-af", "Name").split())


def completed_in(pool: Pool, cluster: str) -> Counter[str]:
    """Return, for each job of a cluster that terminated normally, how many times it did."""
    return Counter({job: count for job, count in pool.completed().items() if job.startswith(f"{cluster}.")})


def timed_round(pool: Pool, jobs: int) -> float:
    """Once ``WORKERS`` fresh pilots are in the pool, submit the jobs and wait until all completed;
    return the seconds from the submission to the last one's termination.

    Raises:
        BenchError: the pilots did not come, or the jobs did not complete once each in time.
    """
    try:
        services.poll(lambda: fresh_pilots(pool) >= WORKERS, PILOTS_TIMEOUT_SECONDS, "fresh pilots to join the pool")
        submitted = time.monotonic()
        cluster = pool.submit(jobs, JOB_SECONDS)
        done = f"{jobs} jobs to complete"
        services.poll(lambda: len(completed_in(pool, cluster)) >= jobs, WAIT_TIMEOUT_SECONDS, done, 0.1)
    except services.WaitTimeout as error:
        raise BenchError(str(error)) from None
    elapsed = time.monotonic() - submitted
    completed = completed_in(pool, cluster)
    if any(count != 1 for count in completed.values()):
        raise BenchError(f"a job completed more than once: {completed}")
    return elapsed


def negotiator_log(pool: Pool) -> str:
    """Return the pool's negotiator log."""
    return pool.run("sh", "-c", 'cat "$(condor_config_val LOG)/NegotiatorLog"')


def measure_pool(
    bench: Bench, image: str, interval: int, levels: Sequence[int], rounds: int, jobs: int
) -> tuple[dict[int, list[float]], list[Cycle]]:
    """Run a pool negotiating every ``interval`` seconds with Plancton's pilots, and at each
    level of simulated slots ``rounds`` rounds of ``jobs`` jobs; return each level's round
    times and the pool's negotiation cycles."""
    pool_settings = {
        "_condor_NEGOTIATOR_INTERVAL": str(interval),
        "_condor_NEGOTIATOR_DEBUG": "D_SUB_SECOND D_MATCH",
        # one log file for the whole scenario
        "_condor_MAX_NEGOTIATOR_LOG": str(2**30),
    }
    pool = Pool.start(image, os.path.join(bench.workdir, f"pool-{secrets.token_hex(3)}"), pool_settings)
    plancton = None
    try:
        plancton = bench.plancton(f"scale{interval}", settings(pool, image))
        plancton.foreground()
        uid_domain = pool.run("condor_config_val", "UID_DOMAIN").strip()
        rounds_by_level = {}
        for slots in levels:
            advertise(pool, slots, uid_domain)
            rounds_by_level[slots] = [timed_round(pool, jobs) for _ in range(rounds)]
        return rounds_by_level, parse_cycles(negotiator_log(pool))
    finally:
        if plancton is not None:
            plancton.stop()
            plancton.remove_pilots()
        pool.stop()


def level_figures(slots: int, elapsed: Sequence[float], jobs: int, interval: int) -> list[Figure]:
    """Return the jobs per minute and the turnover of one level's rounds in a pool that
    negotiates every ``interval`` seconds."""
    where = f"every {interval} s, {slots} simulated slots"
    return [
        Figure(
            f"jobs per minute to {WORKERS} single-shot pilots, {where}",
            "jobs/min",
            Stats.of([jobs_per_minute(jobs, one) for one in elapsed]),
        ),
        Figure(
            f"time per job beyond its run, {where}",
            "s",
            Stats.of([turnover(jobs, one, JOB_SECONDS) for one in elapsed]),
        ),
    ]


def cycle_summary(cycles: Sequence[Cycle]) -> dict[str, object]:
    """Return the raw figures of one level's cycles: their lengths in ms, quartiles and matches."""
    lengths = [cycle.seconds * 1000 for cycle in cycles]
    return {
        "cycles_ms": lengths,
        "quartiles_ms": [percentile(lengths, 0.25), percentile(lengths, 0.75)],
        "matches": sum(cycle.matches for cycle in cycles),
    }


def run(bench: Bench) -> ScenarioResult:
    """Measure the negotiation cycle and the jobs per minute to single-shot pilots at each
    level of simulated slots, negotiating every 2 s, then every 20 s at the ends."""
    levels = QUICK_LEVELS if bench.quick else LEVELS
    rounds = 1 if bench.quick else 4
    jobs = (2 if bench.quick else 3) * WORKERS
    ends = (levels[0], levels[-1])
    with example_image(bench) as image:
        fast, cycles = measure_pool(bench, image, FAST_INTERVAL, levels, rounds, jobs)
        default, _ = measure_pool(bench, image, DEFAULT_INTERVAL, ends, max(1, rounds - 1), jobs)
    figures, raw_levels = [], {}
    for slots in levels:
        at_level = cycles_at(cycles, slots)
        figures.append(
            Figure(f"negotiation cycle, {slots} simulated slots", "ms", Stats.of([c.seconds * 1000 for c in at_level]))
        )
        figures += level_figures(slots, fast[slots], jobs, FAST_INTERVAL)
        raw_levels[str(slots)] = {"round_seconds": fast[slots], **cycle_summary(at_level)}
    for slots in ends:
        figures += level_figures(slots, default[slots], jobs, DEFAULT_INTERVAL)
    return ScenarioResult(
        "pool-scale",
        figures=figures,
        settings={
            "levels": list(levels),
            "pilots": WORKERS,
            "jobs_per_round": jobs,
            "job_seconds": JOB_SECONDS,
            "rounds": rounds,
            "negotiator_interval": FAST_INTERVAL,
            "default_interval": DEFAULT_INTERVAL,
            "simulated_slot_memory_mb": SIMULATED_MEMORY_MB,
        },
        raw={
            "levels": raw_levels,
            f"every_{DEFAULT_INTERVAL}_s": {str(slots): default[slots] for slots in ends},
            "load_average_at_end": os.getloadavg(),
        },
    )
