"""End to end with a real engine: cctools Work Queue workers in Plancton's pilots, started
through planctonctl from the example configuration, complete a real workload; no task is
lost when the pilots are stopped by force-stop or by an owner reclaiming the host.
"""

import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
import yaml

from tests.conftest import STEADY_POLICY, Installation, assert_pilots_gave_way, wait_until
from tests.support.owner_load import OWNER_POLICY, OwnerLoad
from tests.support.services import instance_containers, remove_image
from tests.support.workqueue_manager import (
    EXAMPLE,
    LIVE_STATES,
    Manager,
    bindings_problem,
    build_image,
    worker_command,
)

pytestmark = [pytest.mark.docker, pytest.mark.workqueue]

#: Policy for the other tests: pilots start at once and are never paused for the load of other
#: processes on a shared test machine.
STEADY = yaml.safe_load(STEADY_POLICY)
POOL = 2


@pytest.fixture(scope="module")
def worker_image(docker_engine: None) -> Iterator[str]:
    """The example's pilot image, built by its build-image script under a unique name."""
    problem = bindings_problem()
    if problem:
        pytest.fail(problem)
    reference = f"plancton-workqueue-test-{secrets.token_hex(4)}:latest"
    build_image(reference)
    yield reference
    remove_image(reference)


@pytest.fixture(scope="module")
def self_contained_image(docker_engine: None) -> Iterator[str]:
    """The example's self-contained pilot image (worker and libraries inside, no binds)."""
    reference = f"plancton-workqueue-test-{secrets.token_hex(4)}:self-contained"
    build_image(reference, self_contained=True)
    yield reference
    remove_image(reference)


@pytest.fixture
def managers(tmp_path: "os.PathLike[str]") -> Iterator[Callable[..., Manager]]:
    """Start example managers in the test's folder, each keeping Work Queue's debug log there;
    each is stopped by its pid afterwards."""
    started: list[Manager] = []

    def start(**options: Any) -> Manager:
        manager = Manager.start(str(tmp_path), debug=True, **options)
        started.append(manager)
        return manager

    yield start
    for manager in started:
        manager.stop()


def example_config(image: str, port: int, idle_timeout: float, **overrides: Any) -> str:
    """Return the example configuration for this test: its own image, manager port, worker
    idle timeout, a pool of ``POOL`` pilots and the given keys (the instance comes from the
    installation)."""
    with open(os.path.join(EXAMPLE, "config.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    del config["instance"]
    config["docker_image"] = image
    config["docker_cmd"] = worker_command(config["docker_cmd"], port, idle_timeout, debug=True)
    config["max_docks"] = POOL
    config["vacate_time"] = 5
    config.update(overrides)
    return yaml.safe_dump(config)


def started_manager(start: Callable[..., Manager], **options: Any) -> tuple[Manager, int]:
    """Start a manager and return it with its port."""
    manager = start(**options)
    port = wait_until(manager.port, timeout=60, what="the manager to listen")
    assert isinstance(port, int)
    return manager, port


def live_pilots(installation: Installation) -> list[dict[str, Any]]:
    """Return the pilots that planctonctl status shows alive."""
    pilots = installation.status()["pilots"]
    assert isinstance(pilots, list)
    return [pilot for pilot in pilots if pilot["state"] in LIVE_STATES]


def exit_codes(installation: Installation) -> dict[str, str]:
    """Return, by pilot name, the exit code that the daemon logged when it removed the pilot."""
    found = re.findall(r"pilot (\S+) exited with code (\S+) after", installation.log())
    return dict(found)


def loop_count(installation: Installation) -> int:
    """Return how many loops the daemon has run."""
    loops = installation.state().loops
    assert isinstance(loops, int)
    return loops


def pilot_counts_over_loops(installation: Installation, loops: int, timeout: float = 60.0) -> list[int]:
    """Return the numbers of live pilots that status shows while the daemon runs ``loops`` more
    loops (the bound only keeps a stuck daemon from hanging the test)."""
    last = loop_count(installation) + loops
    deadline = time.monotonic() + timeout
    counts = []
    while loop_count(installation) < last:
        if time.monotonic() > deadline:
            pytest.fail(f"the daemon did not run {loops} loops in {timeout:.0f} s")
        counts.append(len(live_pilots(installation)))
    return counts


def assert_every_task_once_and_right(manager: Manager, tasks: int) -> list[dict[str, Any]]:
    """Check the manager's report: each task completed exactly once, with the right output."""
    done = manager.done()
    tags = [event["tag"] for event in done]
    assert sorted(tags) == [f"task-{index:04d}" for index in range(tasks)], manager.output()
    wrong = [event for event in done if not event["ok"]]
    assert not wrong, f"tasks with a wrong output: {wrong}"
    return done


def test_pilots_complete_a_workload_and_idle_pilots_are_replaced_up_to_max_docks(
    installation: Installation, worker_image: str, managers: Callable[..., Manager]
) -> None:
    tasks = 24
    manager, port = started_manager(managers, tasks=tasks, sleep=1, linger=300)
    installation.write_config(example_config(worker_image, port, idle_timeout=4, **STEADY))
    started = installation.ctl("start")
    assert started.returncode == 0, started.stderr

    wait_until(lambda: len(manager.done()) >= tasks, timeout=180, what=f"{tasks} tasks to complete")
    assert_every_task_once_and_right(manager, tasks)
    connected = [event["workers"] for event in manager.events("state")]
    # the only workers that know this manager's port are Plancton's pilots, never more than max_docks
    assert 1 <= max(connected) <= POOL
    assert f"plancton-worker --cores=1 --memory=2048 --timeout=4 --debug=wq 127.0.0.1 {port})" in installation.log()
    workload_pilots = {pilot["name"] for pilot in live_pilots(installation)}
    assert workload_pilots

    # with no work left each worker exits after its idle timeout; with max_docks now 1, the
    # pilots that leave are replaced by one pilot only
    installation.write_config(example_config(worker_image, port, idle_timeout=4, **{**STEADY, "max_docks": 1}))
    assert installation.ctl("reload").returncode == 0

    def replaced_by_one() -> bool:
        codes = exit_codes(installation)
        pilots = live_pilots(installation)
        idled_out = all(codes.get(name) == "0" for name in workload_pilots)
        return idled_out and len(pilots) == 1 and pilots[0]["name"] not in workload_pilots

    wait_until(replaced_by_one, timeout=120, what="the idle pilots to exit and one pilot to replace them")
    assert "stopping pilot" not in installation.log()  # they left on their own
    # and it stays one pilot over the next loops, as replacements idle out in turn
    counts = pilot_counts_over_loops(installation, 6)
    assert counts and max(counts) <= 1, counts


@pytest.mark.parametrize("reclaim", ["force-stop", "owner load"])
def test_no_task_is_lost_when_the_pilots_are_stopped(
    reclaim: str,
    installation: Installation,
    worker_image: str,
    managers: Callable[..., Manager],
    owner_load: OwnerLoad,
) -> None:
    tasks = 20
    manager, port = started_manager(managers, tasks=tasks, sleep=2)
    policy = STEADY if reclaim == "force-stop" else OWNER_POLICY
    installation.write_config(example_config(worker_image, port, idle_timeout=60, **policy))
    assert installation.ctl("start").returncode == 0

    wait_until(lambda: len(manager.done()) >= 2, timeout=120, what="the first tasks to complete")
    if reclaim == "force-stop":
        assert installation.ctl("force-stop").returncode == 0
    else:
        owner_load.start(cores=os.cpu_count() or 1)

    def workers_gone() -> bool:
        return not live_pilots(installation) and manager.latest_state().get("workers") == 0

    wait_until(workers_gone, timeout=120, what="every pilot to stop and the manager to see its workers leave")
    assert len(manager.done()) < tasks  # work was still queued when the pilots went
    workers_before = max(state.get("workers", 0) for state in manager.events("state"))
    assert_pilots_gave_way(installation.log(), reclaim)

    if reclaim == "force-stop":
        assert installation.ctl("resume").returncode == 0
    else:
        owner_load.stop()
    assert manager.exit_status(timeout=240) == 0, manager.output()

    done = assert_every_task_once_and_right(manager, tasks)
    summary = manager.summary()
    assert summary is not None
    assert summary["completed"] == summary["correct"] == tasks
    # new pilots joined once the first had left (whether the manager counts a worker stopped
    # with SIGTERM as "lost" depends on whether it could leave cleanly, so that is not asked)
    assert summary["workers_joined"] > workers_before
    # the tasks of the stopped workers ran again on the new pilots
    assert max(event["attempts"] for event in done) >= 2


def test_the_self_contained_image_needs_no_bind(
    installation: Installation, self_contained_image: str, managers: Callable[..., Manager]
) -> None:
    tasks = 4
    manager, port = started_manager(managers, tasks=tasks, sleep=0, hash_mib=1)
    config = example_config(self_contained_image, port, idle_timeout=30, binds=[], max_docks=1, **STEADY)
    installation.write_config(config)
    assert installation.ctl("start").returncode == 0
    # busybox's sha256sum and head, inside the image, do the tasks' work
    assert manager.exit_status(timeout=120) == 0, manager.output()
    assert_every_task_once_and_right(manager, tasks)


def test_a_drain_deadline_is_the_workers_wall_time(
    installation: Installation, worker_image: str, managers: Callable[..., Manager], docker_api: docker.APIClient
) -> None:
    tasks = 2
    manager, port = started_manager(managers, tasks=tasks, sleep=0)
    installation.write_config(example_config(worker_image, port, idle_timeout=30, max_docks=1, **STEADY))
    assert installation.ctl("drain", "--by", "1h").returncode == 0
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: len(manager.done()) >= tasks, timeout=120, what=f"{tasks} tasks to complete")
    assert_every_task_once_and_right(manager, tasks)
    containers = instance_containers(docker_api, installation.instance)
    (pilot,) = [entry["Id"] for entry in containers if entry["State"] == "running"]
    execution = docker_api.exec_create(pilot, ["cat", "/proc/1/cmdline"])
    command = docker_api.exec_start(execution["Id"]).decode().split("\0")
    assert command[0] == "work_queue_worker", command
    (wall_time,) = [int(item.split("=")[1]) for item in command if item.startswith("--wall-time=")]
    assert 0 < wall_time <= 3600
