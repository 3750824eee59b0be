"""Work Queue through Plancton's pilots: throughput against the same workers on the host, and
the time from ``planctonctl resume`` to the first task running again.

``bench/run --only workqueue`` runs :func:`run_scenario`: short and 30 s tasks, through the
pilots and through host workers capped at a core each as the pilots are. Run on its own, as
below, this module compares with uncapped host workers (at nice 0 and 19) and measures the
resume.

Run as root from the repository (Debian's ``coop-computing-tools`` and ``python3-workqueue``
installed, the Docker Engine running)::

    PYTHONPATH=. /opt/plancton-test/venv/bin/python bench/workqueue.py [--tasks 40] [--hash-mib 200]

Throughput: the example manager (``examples/workqueue/manager.py``) submits ``--tasks`` tasks
that each hash ``--hash-mib`` MiB; ``--workers`` workers with one core each run them, started
directly on the host (at niceness 0, and at 19 as a low-priority reference) or as Plancton's
pilots from the example configuration (``max_docks`` = ``--workers``, ``cpus_per_dock`` 1).
Pilots run at the lowest CPU weight, so on a busy host they get less CPU than host workers by
design; the nice 19 leg is the usual low priority for comparison (with the kernel's autogroup
scheduling, niceness only yields to processes of the same session). The legs alternate
``--rounds`` times so that a change of the machine's load hits all alike; tasks per minute
count from the first dispatch to the last result, as the manager reports them.

Resume: with pilots working through sleeping tasks, ``planctonctl force-stop`` stops every
pilot; once the manager has seen every worker leave, ``planctonctl resume`` runs, and the
figure is the time from just before that command to the dispatch of the first task (from the
manager's own timestamp), split at the daemon's "started pilot" log line.

Everything the run makes (daemon, pilots, image, manager, workers) is stopped or removed at
the end. Results go to stdout as a table and as JSON.
"""

import argparse
import datetime
import functools
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import yaml

from bench.errors import BenchError
from bench.harness import Bench, log_times
from bench.stats import Figure, ScenarioResult, Stats, at_least
from tests.support import services
from tests.support.workqueue_manager import (
    EXAMPLE,
    LIVE_STATES,
    REPOSITORY,
    HostWorkers,
    Manager,
    bindings_problem,
    build_image,
    worker_command,
)

PLANCTONCTL = os.path.join(os.path.dirname(sys.executable), "planctonctl")
#: The owner never counts as busy and pilots are never paused: this measures the pilots alone.
POLICY = {
    "owner_busy_percent": 100,
    "owner_idle_percent": 99,
    "cpu_pressure_percent": 100,
    "pause_delay": 3600,
    "grace_spawn": 0,
    "main_sleep": 1,
    "vacate_time": 5,
}
WAIT_TIMEOUT_SECONDS = 600.0
#: What the daemon's log says, after the time, when it has started a pilot.
STARTED_PILOT = " INFO plancton.daemon.executor: started pilot "


class BenchFailure(Exception):
    """Something the benchmark waits for did not happen in time."""


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT_TIMEOUT_SECONDS) -> Any:
    """Poll until ``predicate`` returns something true and return it.

    Raises:
        BenchFailure: it did not within ``timeout`` seconds.
    """
    try:
        return services.poll(predicate, timeout, what, interval=0.05)
    except services.WaitTimeout as error:
        raise BenchFailure(str(error)) from None


class Installation:
    """A Plancton installation in a temporary folder, driven through planctonctl."""

    def __init__(self, root: str, instance: str, image: str) -> None:
        self.root = root
        self.instance = instance
        self.image = image
        # planctonctl runs this checkout's Plancton
        search_path = [REPOSITORY, os.environ.get("PYTHONPATH", "")]
        self.environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, search_path)))

    def ctl(self, *args: str) -> str:
        """Run planctonctl on this installation; return its output.

        Raises:
            BenchFailure: the command failed.
        """
        folders = ["--confdir", f"{self.root}/conf", "--rundir", f"{self.root}/run", "--logdir", f"{self.root}/log"]
        folders += ["--statedir", f"{self.root}/state"]
        done = subprocess.run(
            [PLANCTONCTL, *folders, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            env=self.environment,
        )
        if done.returncode not in (0, 3):
            raise BenchFailure(f"planctonctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def configure(self, port: int, workers: int) -> None:
        """Write the example configuration for a manager on ``port`` and ``workers`` pilots."""
        with open(os.path.join(EXAMPLE, "config.yaml"), encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        config.update(POLICY, instance=self.instance, docker_image=self.image, max_docks=workers, cpus_per_dock=1)
        config["docker_cmd"] = worker_command(config["docker_cmd"], port, idle_timeout=60)
        os.makedirs(f"{self.root}/conf", exist_ok=True)
        with open(f"{self.root}/conf/config.yaml", "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle)

    def live_pilots(self) -> int:
        """Return how many pilots status shows alive."""
        pilots = json.loads(self.ctl("status", "--json"))["pilots"]
        return sum(1 for pilot in pilots if pilot["state"] in LIVE_STATES)

    def started_pilot_times(self) -> list[float]:
        """Return the times (epoch seconds) of the daemon's "started pilot" log lines."""
        return log_times(f"{self.root}/log/plancton.log", STARTED_PILOT)

    def stop(self) -> None:
        """Stop the daemon and remove its pilots."""
        self.ctl("stop", "--timeout", "20")
        services.remove_instance(self.instance)


@contextmanager
def manager_run(folder: str, **options: Any) -> Iterator[tuple[Manager, int]]:
    """Start an example manager; yield it with its port; stop it at the end."""
    manager = Manager.start(folder, **options)
    try:
        port = wait_for(manager.port, "the manager to listen", timeout=60)
        yield manager, port
    finally:
        manager.stop()


def finished_summary(manager: Manager) -> dict[str, Any]:
    """Wait for the manager to finish; return its summary.

    Raises:
        BenchFailure: it did not finish in time, or a task came back wrong.
    """
    try:
        manager.process.wait(timeout=WAIT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise BenchFailure("the manager did not finish its tasks in time") from None
    summary = manager.summary()
    if manager.process.returncode != 0 or summary is None:
        raise BenchFailure(f"the manager failed:\n{manager.output()}")
    return summary


def throughput_on_host(
    folder: str, tasks: int, hash_mib: int, workers: int, niceness: int = 0, cgroup_procs: Sequence[str] = ()
) -> dict[str, Any]:
    """Run the workload on workers started directly on the host at a niceness, each in its
    cgroup if ``cgroup_procs`` names them (one cgroup.procs file per worker); return the
    manager's summary with the host's load at its end."""
    host_workers = HostWorkers()
    with manager_run(folder, tasks=tasks, sleep=0, hash_mib=hash_mib) as (manager, port):
        try:
            host_workers.start(workers, port, cores=1, idle_timeout=60, niceness=niceness)
            for process, procs in zip(host_workers.processes, cgroup_procs, strict=False):
                write_file(procs, str(process.pid))
            return with_load(finished_summary(manager))
        finally:
            host_workers.stop()


def with_load(summary: dict[str, Any]) -> dict[str, Any]:
    """Return a manager's summary with the host's load average at its end."""
    return {**summary, "load_average_1min": os.getloadavg()[0]}


def throughput_in_pilots(
    folder: str, tasks: int, hash_mib: int, workers: int, image: str, instance: str
) -> dict[str, Any]:
    """Run the workload on Plancton's pilots; return the manager's summary with the host's
    load at its end."""
    plancton = Installation(tempfile.mkdtemp(dir=folder), instance, image)
    with manager_run(folder, tasks=tasks, sleep=0, hash_mib=hash_mib) as (manager, port):
        try:
            plancton.configure(port, workers)
            plancton.ctl("start")
            return with_load(finished_summary(manager))
        finally:
            plancton.stop()


def resume_latencies(folder: str, args: argparse.Namespace, image: str) -> list[dict[str, float]]:
    """Force-stop and resume the pilots ``args.resumes`` times; return, for each, the seconds
    from the resume command to the first pilot started and to the first task dispatched."""
    plancton = Installation(tempfile.mkdtemp(dir=folder), f"bwq{secrets.token_hex(4)}", image)
    with manager_run(folder, tasks=100 * args.workers * args.resumes, sleep=1) as (manager, port):
        try:
            plancton.configure(port, args.workers)
            plancton.ctl("start")
            measured = [one_resume(plancton, manager) for _ in range(args.resumes)]
        finally:
            plancton.stop()
    return measured


def one_resume(plancton: Installation, manager: Manager) -> dict[str, float]:
    """With pilots running tasks, force-stop them, resume, and return the seconds from the
    resume command to the first pilot started and to the first task dispatched."""
    wait_for(lambda: manager.latest_state().get("running", 0) > 0, "tasks to run")
    plancton.ctl("force-stop")
    wait_for(lambda: plancton.live_pilots() == 0, "the pilots to stop")
    wait_for(lambda: manager.latest_state().get("workers") == 0, "the manager to see the workers leave")
    resumed = time.time()
    plancton.ctl("resume")
    dispatched = wait_for(lambda: first_dispatch_after(manager, resumed), "a task dispatched")
    # the log's times have millisecond resolution
    started = wait_for(lambda: [t for t in plancton.started_pilot_times() if t >= resumed - 0.001], "a pilot")
    return {"to_pilot_started": min(started) - resumed, "to_task_running": dispatched - resumed}


def first_dispatch_after(manager: Manager, since: float) -> float | None:
    """Return the earliest dispatch time after ``since`` among completed tasks, or None."""
    times = [event["dispatched"] for event in manager.done() if event["dispatched"] >= since]
    return min(times) if times else None


# -- the scenario of bench/run --------------------------------------------------------------

#: The two kinds of task the scenario measures: (tasks per leg, MiB hashed by each task). On
#: these machines a core hashes about 210 MiB/s: the short tasks take about 0.2 s, the long ones
#: about 30 s.
TASK_KINDS = {"short tasks": (60, 40), "30 s tasks": (4, 6400)}
WORKERS = 2
TARGET_RATIOS = {"short tasks": 0.8, "30 s tasks": 0.95}


@contextmanager
def one_core_cgroups(tag: str, count: int) -> Iterator[list[str]]:
    """Yield the cgroup.procs files of ``count`` cgroups capped at one core each, as each pilot
    is by cpus_per_dock 1 (cgroup v1's cpu controller, or v2); remove them at the end."""
    unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    base = "/sys/fs/cgroup" if unified else "/sys/fs/cgroup/cpu"
    folders = [os.path.join(base, f"{tag}-{index}") for index in range(count)]
    try:
        for folder in folders:
            os.makedirs(folder)
            if unified:
                write_file(os.path.join(folder, "cpu.max"), "100000 100000")
            else:
                write_file(os.path.join(folder, "cpu.cfs_period_us"), "100000")
                write_file(os.path.join(folder, "cpu.cfs_quota_us"), "100000")
        yield [os.path.join(folder, "cgroup.procs") for folder in folders]
    finally:
        for folder in folders:
            # the workers are stopped and their tasks gone; the kernel may take a moment
            with suppress(services.WaitTimeout):
                services.poll(functools.partial(_rmdir, folder), 10, f"{folder} removed")


def write_file(path: str, value: str) -> None:
    """Write a value to a cgroup file."""
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def _rmdir(folder: str) -> bool:
    try:
        os.rmdir(folder)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def run_scenario(bench: Bench) -> ScenarioResult:
    """Measure Work Queue's throughput through Plancton's pilots against the same number of
    workers on the host, capped at a core each as the pilots are, with short and long tasks.

    Raises:
        BenchError: the Work Queue bindings are missing, or a leg failed.
    """
    problem = bindings_problem()
    if problem:
        raise BenchError(problem)
    rounds = 1 if bench.quick else 2
    result = ScenarioResult(
        "workqueue", settings={"workers": WORKERS, "task_kinds": TASK_KINDS, "rounds": rounds, "plancton": POLICY}
    )
    image = f"plancton-workqueue-bench-{secrets.token_hex(4)}:latest"
    folder = tempfile.mkdtemp(prefix="plancton-bench-wq-", dir=bench.workdir)
    instance = bench.instance_name("wq")
    bench.instances.add(instance)
    legs: dict[str, dict[str, list[dict[str, Any]]]] = {kind: {"host": [], "pilots": []} for kind in TASK_KINDS}
    try:
        build_image(image)
        with one_core_cgroups(f"plancton-bench-wq-{secrets.token_hex(4)}", WORKERS) as cgroups:
            for turn in range(rounds):
                for kind, (tasks, hash_mib) in TASK_KINDS.items():
                    order = ("host", "pilots") if turn % 2 == 0 else ("pilots", "host")
                    for leg in order:
                        summary = (
                            throughput_on_host(folder, tasks, hash_mib, WORKERS, cgroup_procs=cgroups)
                            if leg == "host"
                            else throughput_in_pilots(folder, tasks, hash_mib, WORKERS, image, instance)
                        )
                        legs[kind][leg].append(summary)
    except BenchFailure as error:
        raise BenchError(str(error)) from None
    finally:
        services.remove_image(image)
    for kind, by_leg in legs.items():
        host = [summary["tasks_per_minute"] for summary in by_leg["host"]]
        pilots = [summary["tasks_per_minute"] for summary in by_leg["pilots"]]
        ratio = Stats.paired(pilots, host)
        lost = sum(summary["workers_lost"] for summary in by_leg["pilots"])
        result.figures += [
            Figure(f"{kind}: tasks per minute, workers on the host", "", Stats.of(host)),
            Figure(f"{kind}: tasks per minute, Plancton's pilots", "", Stats.of(pilots)),
            Figure(
                f"{kind}: pilots / host (paired)",
                "x",
                ratio,
                target=f">= {TARGET_RATIOS[kind]}x",
                met=at_least(ratio.median, TARGET_RATIOS[kind]),
            ),
            Figure(f"{kind}: pilots lost mid-run", "", value=lost, target="0", met=lost == 0),
        ]
    result.raw = {"legs": legs}
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement; return the results."""
    problem = bindings_problem()
    if problem:
        raise BenchFailure(problem)
    image = f"plancton-workqueue-bench-{secrets.token_hex(4)}:latest"
    folder = tempfile.mkdtemp(prefix="plancton-bench-wq-")
    try:
        build_image(image)
        legs: dict[str, list[dict[str, Any]]] = {"host": [], "host_nice_19": [], "pilots": []}
        for _ in range(args.rounds):
            legs["host"].append(throughput_on_host(folder, args.tasks, args.hash_mib, args.workers))
            legs["host_nice_19"].append(
                throughput_on_host(folder, args.tasks, args.hash_mib, args.workers, niceness=19)
            )
            instance = f"bwq{secrets.token_hex(4)}"
            legs["pilots"].append(
                throughput_in_pilots(folder, args.tasks, args.hash_mib, args.workers, image, instance)
            )
        resumes = resume_latencies(folder, args, image)
    finally:
        services.remove_image(image)
        shutil.rmtree(folder, ignore_errors=True)
    rates = {leg: statistics.median(summary["tasks_per_minute"] for summary in runs) for leg, runs in legs.items()}
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average_at_end": os.getloadavg(),
        "settings": vars(args),
        "tasks_per_minute_host": rates["host"],
        "tasks_per_minute_host_nice_19": rates["host_nice_19"],
        "tasks_per_minute_pilots": rates["pilots"],
        "ratio_pilots_to_host": rates["pilots"] / rates["host"],
        "ratio_pilots_to_host_nice_19": rates["pilots"] / rates["host_nice_19"],
        "resume_to_pilot_started_seconds": [item["to_pilot_started"] for item in resumes],
        "resume_to_task_running_seconds": [item["to_task_running"] for item in resumes],
        "raw": legs,
    }


def report(results: dict[str, Any]) -> None:
    """Print the figures as a table, then the whole results as JSON."""
    running = results["resume_to_task_running_seconds"]
    started = results["resume_to_pilot_started_seconds"]
    rows = [
        ("tasks per minute, workers on the host", f"{results['tasks_per_minute_host']:.1f}"),
        ("tasks per minute, workers on the host, nice 19", f"{results['tasks_per_minute_host_nice_19']:.1f}"),
        ("tasks per minute, Plancton's pilots", f"{results['tasks_per_minute_pilots']:.1f}"),
        ("ratio pilots / host", f"{results['ratio_pilots_to_host']:.3f}"),
        ("ratio pilots / host at nice 19", f"{results['ratio_pilots_to_host_nice_19']:.3f}"),
        ("resume to first pilot started (median, s)", f"{statistics.median(started):.2f}"),
        ("resume to first task running (median, s)", f"{statistics.median(running):.2f}"),
        ("resume to first task running (min-max, s)", f"{min(running):.2f}-{max(running):.2f}"),
    ]
    for what, value in rows:
        print(f"{what:<48} {value}")
    print(json.dumps(results, indent=1))


def main(argv: list[str]) -> int:
    """Run the benchmark with the given arguments; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=30, help="tasks per throughput leg (default 30)")
    parser.add_argument("--hash-mib", type=int, default=100, help="MiB each task hashes (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="workers, and max_docks (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of host and pilot legs (default 2)")
    parser.add_argument("--resumes", type=int, default=3, help="force-stop/resume repetitions (default 3)")
    args = parser.parse_args(argv)
    try:
        report(run(args))
    except BenchFailure as error:
        print(f"bench/workqueue.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
