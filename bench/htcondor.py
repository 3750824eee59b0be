"""HTCondor: jobs per minute through Plancton's pilots, against the same number of plain
startds in containers that Plancton does not manage.

Two scenarios: ``htcondor`` runs jobs of 90 s (60 s with ``--quick``) through the example's
single-shot pilots; ``htcondor-short`` runs jobs of 10 s and of 60 s through multi-job pilots
(:data:`MULTI_JOB`: a pilot keeps its claim and runs job after job), and the 10 s jobs through
single-shot pilots too, for contrast.

Both legs run the example's image (``examples/htcondor/build-image``, from its cached root file
system when there is one) against a fresh pool of their own (:mod:`tests.support.htcondor_pool`: a
central manager with a schedd, negotiating every 2 s), with ``WORKERS`` execute nodes of one
CPU each, and time the same jobs from their submission to the last one's termination, as the
submitter sees them in the jobs' event log:

- pilots: Plancton (``planctonctl foreground``) runs the example configuration with
  ``max_docks`` = ``WORKERS``; a single-shot pilot runs one job and exits, a multi-job one runs
  up to ``PLANCTON_PILOT_JOBS``, and Plancton starts a new one;
- plain startds: the very containers Plancton would create for those pilots (same image, user,
  capabilities, limits, network and CPU priority), started by the benchmark itself, whose
  startds keep their claims and run job after job (HTCondor's usual ``START`` and
  ``CLAIM_WORKLIFE``).

Jobs sleep rather than compute, so that the figure is what a pilot adds to each job (for a
single-shot pilot, the turnover: the startd's shutdown on its next update, a new container, a
new startd advertising itself, a negotiation cycle), not the machine's noise. The figure holds
for an idle host: on a busy one both legs get only CPU time no one else wants, and the pilots,
which start HTCondor anew for each job, wait longest for it. The legs take turns, and every
pool, container and image the scenario makes is removed at its end.
"""

import contextlib
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import psutil
import yaml

from bench.engine import BENCH_LABEL
from bench.errors import BenchError
from bench.harness import IDLE_OWNER, Bench
from bench.stats import Figure, ScenarioResult, Stats, ratio_figure
from plancton.config.loader import parse
from plancton.config.schema import HostFacts
from plancton.engines.spec import container_spec
from tests.support import services
from tests.support.htcondor_pool import EXAMPLE, TOKEN_DIRECTORY, Pool, build_image

WORKERS = 2
TARGET_RATIO = 0.9
#: A plain startd keeps its claim and runs any number of jobs, as HTCondor's defaults have it.
PLAIN_STARTD = {"_condor_START": "True", "_condor_CLAIM_WORKLIFE": "-1"}
#: Multi-job pilots as the example's README sets them, with room for every job of a leg.
MULTI_JOB = {
    "_condor_PLANCTON_PILOT_JOBS": "100",
    "_condor_PLANCTON_PILOT_SECONDS": "3600",
    "_condor_CLAIM_WORKLIFE": "-1",
}
#: The short jobs' legs: (jobs, seconds each), about a minute or two on ``WORKERS`` nodes.
SHORT_JOBS = (6 * WORKERS, 10.0)
MINUTE_JOBS = (2 * WORKERS, 60.0)
WAIT_TIMEOUT_SECONDS = 1800.0


def example_config() -> dict[str, Any]:
    """Return the example's configuration (examples/htcondor/config.yaml) as it is written."""
    with open(os.path.join(EXAMPLE, "config.yaml"), encoding="utf-8") as handle:
        config: dict[str, Any] = yaml.safe_load(handle)
    return config


def settings(pool: Pool, image: str, environment: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return the example configuration for this pool and image, ``WORKERS`` pilots, with an
    owner who never takes the host back (this measures the pilots alone), and ``environment``
    over the example's."""
    config = example_config()
    del config["instance"]
    config["docker_image"] = image
    config["environment"].update(pool.pilot_environment(idle_seconds=600))
    config["environment"].update(environment or {})
    config["binds"] = [f"{pool.token_folder}:{TOKEN_DIRECTORY}"]
    config["network_mode"] = pool.network
    config["max_docks"] = WORKERS
    config["vacate_time"] = 10
    return {**config, **IDLE_OWNER, "main_sleep": 1}


def timed_jobs(pool: Pool, jobs: int, seconds: float, workers: int = WORKERS, burn: bool = False) -> float:
    """Once ``workers`` slots are in the pool, submit the jobs (sleeping, or with ``burn``
    burning a CPU each) and wait until all completed; return the jobs per minute, from the
    submission to the last termination.

    Raises:
        BenchError: the slots did not come, or the jobs did not complete in time.
    """
    try:
        services.poll(lambda: len(pool.pilot_slots()) >= workers, 120, "the execute nodes to join the pool")
        submitted = time.monotonic()
        pool.submit(jobs, seconds, burn=burn)
        services.poll(lambda: len(pool.completed()) >= jobs, WAIT_TIMEOUT_SECONDS, f"{jobs} jobs to complete", 0.1)
    except services.WaitTimeout as error:
        raise BenchError(str(error)) from None
    elapsed = time.monotonic() - submitted
    if any(count != 1 for count in pool.completed().values()):
        raise BenchError(f"a job completed more than once: {pool.completed()}")
    return jobs * 60.0 / elapsed


def through_pilots(
    bench: Bench, image: str, jobs: int, seconds: float, environment: Mapping[str, str] | None = None
) -> float:
    """Run the jobs through Plancton's pilots, single shot unless ``environment`` says
    otherwise (:data:`MULTI_JOB`); return the jobs per minute."""
    pool = Pool.start(image, os.path.join(bench.workdir, f"pool-{secrets.token_hex(3)}"))
    plancton = None
    try:
        plancton = bench.plancton("htcondor", settings(pool, image, environment))
        plancton.foreground()
        return timed_jobs(pool, jobs, seconds)
    finally:
        if plancton is not None:
            plancton.stop()
            plancton.remove_pilots()
        pool.stop()


def through_plain_startds(bench: Bench, image: str, jobs: int, seconds: float) -> float:
    """Run the jobs through plain startds in the containers Plancton would make; return the
    jobs per minute."""
    pool = Pool.start(image, os.path.join(bench.workdir, f"pool-{secrets.token_hex(3)}"))
    tag = f"htcondor-{secrets.token_hex(3)}"
    try:
        start_startds(bench, settings(pool, image, PLAIN_STARTD), tag, WORKERS)
        # the CPU priority of Plancton's pilots (cpu.idle on their parent), so that the legs
        # differ only in how their startds come and go
        bench.pilot_cgroup(f"bench_{bench.run_id}_{tag}").set_lowest_weight()
        return timed_jobs(pool, jobs, seconds)
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            bench.remove_containers(f"{BENCH_LABEL}={bench.baseline_tag(tag)}")
        pool.stop()


def start_startds(bench: Bench, raw: Mapping[str, Any], tag: str, count: int, engine_weight: bool = False) -> list[str]:
    """Start ``count`` plain startds in the very containers Plancton would make for pilots of
    the configuration ``raw`` (image, user, capabilities, limits, binds, network), labelled
    for the baseline ``tag`` and under its cgroup parent; with ``engine_weight`` they keep the
    engine's default CPU weight instead of a pilot's. Return the containers' ids."""
    started = []
    facts = HostFacts(psutil.cpu_count() or 1, psutil.virtual_memory().total, psutil.swap_memory().total)
    config, _ = parse({**raw, "instance": "bench"}, facts)
    weight = {"cpu_shares"} if engine_weight else set()
    for _ in range(count):
        spec = container_spec(
            config, bench.baseline_cgroup(tag), "bench", secrets.token_hex(4), time.time(), bench.ulimit_ceilings
        )
        host_config = {key: value for key, value in spec.host_config.items() if key not in weight}
        container = bench.api.create_container(
            spec.image,
            spec.command,
            user=spec.user or "",
            environment=spec.environment,
            labels=bench.baseline_labels(tag),
            hostname=spec.hostname,
            host_config=bench.api.create_host_config(**host_config),
        )
        bench.api.start(container["Id"])
        started.append(str(container["Id"]))
    return started


@contextlib.contextmanager
def example_image(bench: Bench) -> Iterator[str]:
    """Build the example's image under a name of this run; yield it, and remove it at the end."""
    image = f"plancton-htcondor-bench-{bench.run_id}:latest"
    build_image(image)
    try:
        yield image
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            bench.api.remove_image(image, force=True)


def time_lost_per_change(jobs: int, pilots: float, plain: float) -> float:
    """Given a leg's jobs on ``WORKERS`` nodes and the jobs per minute through single-shot
    pilots and through plain startds, return the seconds the pilots lose per change of pilot:
    each node runs ``jobs // WORKERS`` jobs one after the other, with a new pilot between two."""
    changes = jobs // WORKERS - 1
    return jobs * 60.0 * (1 / pilots - 1 / plain) / changes


def run(bench: Bench) -> ScenarioResult:
    """Measure jobs per minute through single-shot pilots and through plain startds, taking turns."""
    rounds = 1 if bench.quick else 2
    seconds = 60.0 if bench.quick else 90.0
    jobs = 2 * WORKERS
    pilots: list[float] = []
    plain: list[float] = []
    with example_image(bench) as image:
        for _ in range(rounds):
            plain.append(through_plain_startds(bench, image, jobs, seconds))
            pilots.append(through_pilots(bench, image, jobs, seconds))
    turnover = [time_lost_per_change(jobs, one, other) for one, other in zip(pilots, plain, strict=True)]
    return ScenarioResult(
        "htcondor",
        figures=[
            Figure("jobs per minute, plain startds", "jobs/min", Stats.of(plain)),
            Figure("jobs per minute, Plancton's pilots", "jobs/min", Stats.of(pilots)),
            ratio_figure("ratio pilots / plain startds", pilots, plain, TARGET_RATIO, unit=""),
            Figure("time lost per change of pilot", "s", Stats.of(turnover)),
        ],
        settings={"workers": WORKERS, "jobs": jobs, "job_seconds": seconds, "rounds": rounds},
        # the figures hold for an idle host: say how idle it was
        raw={"pilots": pilots, "plain": plain, "load_average_at_end": os.getloadavg()},
    )


def run_short(bench: Bench) -> ScenarioResult:
    """Measure jobs per minute of 10 s and of 60 s jobs through multi-job pilots and through
    plain startds, and of the 10 s jobs through single-shot pilots, the legs taking turns."""
    rounds = 1 if bench.quick else 2
    legs: dict[str, list[float]] = {
        "plain 10 s": [],
        "multi 10 s": [],
        "single 10 s": [],
        "plain 60 s": [],
        "multi 60 s": [],
    }
    with example_image(bench) as image:
        for _ in range(rounds):
            legs["plain 10 s"].append(through_plain_startds(bench, image, *SHORT_JOBS))
            legs["multi 10 s"].append(through_pilots(bench, image, *SHORT_JOBS, MULTI_JOB))
            legs["single 10 s"].append(through_pilots(bench, image, *SHORT_JOBS))
            legs["plain 60 s"].append(through_plain_startds(bench, image, *MINUTE_JOBS))
            legs["multi 60 s"].append(through_pilots(bench, image, *MINUTE_JOBS, MULTI_JOB))
    turnover = [
        time_lost_per_change(SHORT_JOBS[0], one, other)
        for one, other in zip(legs["single 10 s"], legs["plain 10 s"], strict=True)
    ]
    return ScenarioResult(
        "htcondor-short",
        figures=[
            Figure("jobs per minute, 10 s jobs, plain startds", "jobs/min", Stats.of(legs["plain 10 s"])),
            Figure("jobs per minute, 10 s jobs, multi-job pilots", "jobs/min", Stats.of(legs["multi 10 s"])),
            Figure("jobs per minute, 10 s jobs, single-shot pilots", "jobs/min", Stats.of(legs["single 10 s"])),
            Figure("jobs per minute, 60 s jobs, plain startds", "jobs/min", Stats.of(legs["plain 60 s"])),
            Figure("jobs per minute, 60 s jobs, multi-job pilots", "jobs/min", Stats.of(legs["multi 60 s"])),
            ratio_figure(
                "ratio multi-job pilots / plain startds, 10 s jobs",
                legs["multi 10 s"],
                legs["plain 10 s"],
                TARGET_RATIO,
                unit="",
            ),
            ratio_figure(
                "ratio multi-job pilots / plain startds, 60 s jobs",
                legs["multi 60 s"],
                legs["plain 60 s"],
                TARGET_RATIO,
                unit="",
            ),
            ratio_figure(
                "ratio single-shot pilots / plain startds, 10 s jobs",
                legs["single 10 s"],
                legs["plain 10 s"],
                None,
                unit="",
            ),
            Figure("time lost per change of single-shot pilot, 10 s jobs", "s", Stats.of(turnover)),
        ],
        settings={
            "workers": WORKERS,
            "short_jobs": list(SHORT_JOBS),
            "minute_jobs": list(MINUTE_JOBS),
            "rounds": rounds,
            "multi_job_environment": MULTI_JOB,
        },
        raw={**legs, "load_average_at_end": os.getloadavg()},
    )
