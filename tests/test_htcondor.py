"""End to end with a real HTCondor pool: HTCondor 23.9 execute nodes in Plancton's pilots,
started through planctonctl from the example configuration, join a central manager in a
container of its own and run the jobs of an ordinary user; each job completes once, also when
the pilots are stopped by force-stop or by an owner reclaiming the host.
"""

import os
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from plancton.control.modefiles import read_drain_by
from tests.conftest import STEADY_POLICY, Installation, assert_pilots_gave_way, wait_until
from tests.support.htcondor_pool import (
    EVICTED,
    EXAMPLE,
    EXECUTE,
    IDLE,
    TOKEN_DIRECTORY,
    Pool,
    build_image,
    expected_result,
)
from tests.support.owner_load import OWNER_POLICY, OwnerLoad
from tests.support.services import remove_image
from tests.support.workqueue_manager import LIVE_STATES

pytestmark = [pytest.mark.docker, pytest.mark.htcondor]

STEADY = yaml.safe_load(STEADY_POLICY)
POOL = 2
#: Seconds an unclaimed pilot waits for a job before it exits (STARTD_NOCLAIM_SHUTDOWN): long
#: enough for the pool's view and Plancton's to be compared while the pilots stay.
IDLE_SECONDS = 20
#: An execute event names the startd's host: the pilot's hostname, which ends with its name.
EXECUTE_HOST = re.compile(r"alias=([\w.-]+)")


@pytest.fixture(scope="module")
def condor_image(docker_engine: None) -> Iterator[str]:
    """The example's pilot image, built by its build-image script under a unique name."""
    reference = f"plancton-htcondor-test-{secrets.token_hex(4)}:latest"
    build_image(reference)
    yield reference
    remove_image(reference)


@pytest.fixture
def pool(condor_image: str, tmp_path: "os.PathLike[str]") -> Iterator[Pool]:
    """A running HTCondor pool (request it before ``installation``, which then stops its
    pilots first); its manager and network are removed afterwards."""
    started = Pool.start(condor_image, os.path.join(tmp_path, "pool"))
    yield started
    started.stop()


def example_config(pool: Pool, image: str, idle_seconds: float, **overrides: Any) -> str:
    """Return the example configuration pointed at this pool: its image, manager, token and
    network, a pool of ``POOL`` pilots and the given keys (the instance comes from the
    installation)."""
    with open(os.path.join(EXAMPLE, "config.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    del config["instance"]
    config["docker_image"] = image
    config["environment"].update(pool.pilot_environment(idle_seconds))
    config["binds"] = [f"{pool.token_folder}:{TOKEN_DIRECTORY}"]
    config["network_mode"] = pool.network
    config["max_docks"] = POOL
    config["vacate_time"] = 10
    config.update(overrides)
    return yaml.safe_dump(config)


def live_pilots(installation: Installation) -> list[str]:
    """Return the names of the pilots that planctonctl status shows alive."""
    pilots = installation.status()["pilots"]
    assert isinstance(pilots, list)
    return [pilot["name"] for pilot in pilots if pilot["state"] in LIVE_STATES]


def exit_codes(installation: Installation) -> dict[str, str]:
    """Return, by pilot name, the exit code that the daemon logged when it removed the pilot."""
    return dict(re.findall(r"pilot (\S+) exited with code (\S+) after", installation.log()))


def slots_are_the_pilots(pool: Pool, installation: Installation) -> bool:
    """Return whether condor_status lists one slot for each live pilot, and no other, while
    the pilots stay the same."""
    pilots = live_pilots(installation)
    slots = pool.pilot_slots()
    return (
        live_pilots(installation) == pilots
        and len(slots) == len(pilots) == POOL
        and all(sum(slot.endswith(pilot) for slot in slots) == 1 for pilot in pilots)
    )


def execute_hosts_in_pilots(pool: Pool, installation: Installation) -> list[str]:
    """Return the host of each job's last execution, in the order the jobs ran, having
    checked that each is one of the pilots the daemon started."""
    hosts = [EXECUTE_HOST.findall(event.text)[-1] for event in pool.events() if event.code == EXECUTE]
    assert len(pilots_of(hosts, installation)) == len(set(hosts)), (hosts, installation.log()[-2000:])
    return hosts


def pilots_of(hosts: list[str], installation: Installation) -> list[str]:
    """Return the names of the pilots the daemon started whose startds are these hosts."""
    started_pilots = re.findall(r"started pilot (\S+) ", installation.log())
    return [pilot for pilot in started_pilots if any(host.endswith(pilot) for host in hosts)]


def assert_each_job_completed_once_and_right(pool: Pool, cluster: str, jobs: int) -> None:
    """Check what the submitter sees: each job terminated exactly once, with exit code 0 and
    the right output, and none is left in the queue."""
    every_job = [f"{cluster}.{process}" for process in range(jobs)]
    assert pool.completed() == dict.fromkeys(every_job, 1), [event.text for event in pool.events()][-10:]
    results = pool.results(cluster)
    assert results == {process: expected_result(process) for process in range(jobs)}
    assert pool.queue() == {}


def test_jobs_complete_once_through_single_shot_pilots_that_plancton_replaces(
    pool: Pool, installation: Installation, condor_image: str
) -> None:
    jobs = 4
    cluster = pool.submit(jobs, seconds=1)
    installation.write_config(example_config(pool, condor_image, IDLE_SECONDS, **STEADY))
    started = installation.ctl("start")
    assert started.returncode == 0, started.stderr

    wait_until(lambda: len(pool.completed()) >= jobs, timeout=180, what=f"{jobs} jobs to complete")
    assert_each_job_completed_once_and_right(pool, cluster, jobs)
    # each job ran on a startd of its own, in one of Plancton's pilots
    hosts = execute_hosts_in_pilots(pool, installation)
    assert len(hosts) == jobs and len(set(hosts)) == jobs, hosts
    # and the pilots left on their own once their job was done (HTCondor's exit code 99)
    assert "stopping pilot" not in installation.log()
    ran_a_job = pilots_of(hosts, installation)
    wait_until(
        lambda: all(exit_codes(installation).get(pilot) == "99" for pilot in ran_a_job),
        timeout=120,
        what=f"the pilots that ran a job ({', '.join(ran_a_job)}) to exit",
    )

    # the pool's view follows Plancton's: one slot per live pilot (fresh ones, without a job)
    wait_until(lambda: slots_are_the_pilots(pool, installation), timeout=60, what="condor_status to list the pilots")
    idle_pilots = live_pilots(installation)
    # with no job left, the pilots exit after IDLE_SECONDS unclaimed and are replaced
    wait_until(
        lambda: all(exit_codes(installation).get(pilot) == "0" for pilot in idle_pilots),
        timeout=IDLE_SECONDS + 60,
        what="the idle pilots to exit",
    )
    wait_until(
        lambda: slots_are_the_pilots(pool, installation) and not set(live_pilots(installation)) & set(idle_pilots),
        timeout=60,
        what="condor_status to list the new pilots",
    )
    assert "stopping pilot" not in installation.log()


def test_multi_job_pilots_run_job_after_job_on_their_claim_and_leave_after_the_last(
    pool: Pool, installation: Installation, condor_image: str
) -> None:
    jobs, per_pilot = 6, 3
    cluster = pool.submit(jobs, seconds=1)
    config = yaml.safe_load(example_config(pool, condor_image, IDLE_SECONDS, **STEADY))
    # as the example's README sets them: with a time bound that the test does not reach
    config["environment"].update(
        {
            "_condor_PLANCTON_PILOT_JOBS": str(per_pilot),
            "_condor_PLANCTON_PILOT_SECONDS": "3600",
            "_condor_CLAIM_WORKLIFE": "-1",
        }
    )
    installation.write_config(yaml.safe_dump(config))
    started = installation.ctl("start")
    assert started.returncode == 0, started.stderr

    wait_until(lambda: len(pool.completed()) >= jobs, timeout=180, what=f"{jobs} jobs to complete")
    assert_each_job_completed_once_and_right(pool, cluster, jobs)
    # the jobs shared pilots, none more than its share, each pilot one of Plancton's
    hosts = Counter(execute_hosts_in_pilots(pool, installation))
    assert sum(hosts.values()) == jobs and max(hosts.values()) == per_pilot, hosts
    # a pilot that ran its share left by itself (HTCondor's code 99), none was stopped
    full = pilots_of([host for host, count in hosts.items() if count == per_pilot], installation)
    wait_until(
        lambda: all(exit_codes(installation).get(pilot) == "99" for pilot in full),
        timeout=120,
        what=f"the pilots that ran their share ({', '.join(full)}) to exit",
    )
    assert "stopping pilot" not in installation.log()


@pytest.mark.parametrize("reclaim", ["force-stop", "owner load"])
def test_no_job_is_lost_when_the_pilots_are_stopped(
    reclaim: str, pool: Pool, installation: Installation, condor_image: str, owner_load: OwnerLoad
) -> None:
    jobs = 4
    cluster = pool.submit(jobs, seconds=10)
    policy = STEADY if reclaim == "force-stop" else OWNER_POLICY
    installation.write_config(example_config(pool, condor_image, idle_seconds=60, **policy))
    assert installation.ctl("start").returncode == 0

    wait_until(lambda: len(pool.events_by_job(EXECUTE)) >= POOL, timeout=120, what="jobs to run")
    if reclaim == "force-stop":
        assert installation.ctl("force-stop").returncode == 0
    else:
        owner_load.start(cores=os.cpu_count() or 1)

    def requeued() -> bool:
        queue = pool.queue()
        return not live_pilots(installation) and len(queue) == jobs and set(queue.values()) == {IDLE}

    wait_until(requeued, timeout=180, what="every pilot to stop and HTCondor to queue every job again")
    evicted = pool.events_by_job(EVICTED)
    running_before = set(pool.events_by_job(EXECUTE))
    assert not pool.completed()
    assert running_before and set(evicted) == running_before, pool.events()[-6:]
    assert_pilots_gave_way(installation.log(), reclaim)

    if reclaim == "force-stop":
        assert installation.ctl("resume").returncode == 0
    else:
        starts = installation.log().count("started pilot")
        owner_load.stop()
        wait_until(
            lambda: installation.log().count("started pilot") > starts,
            timeout=120,
            what="pilots to start again once the owner is idle",
        )
        # from now on the owner is away: the load of other processes on a shared test machine
        # must not take the host back again and again
        installation.write_config(example_config(pool, condor_image, idle_seconds=60, **STEADY))
        assert installation.ctl("reload").returncode == 0
    wait_until(lambda: len(pool.completed()) >= jobs, timeout=240, what=f"{jobs} jobs to complete")
    assert_each_job_completed_once_and_right(pool, cluster, jobs)
    # the evicted jobs ran again, on new pilots
    executions = pool.events_by_job(EXECUTE)
    assert all(executions[job] >= 2 for job in evicted), executions


def test_a_startd_takes_no_job_it_cannot_finish_by_a_drain_deadline_set_after_it_started(
    pool: Pool, installation: Installation, condor_image: str
) -> None:
    installation.write_config(example_config(pool, condor_image, idle_seconds=120, **STEADY))
    assert installation.ctl("start").returncode == 0
    wait_until(
        lambda: pool.pilot_slot_attribute("PlanctonShutdownTime") == ["undefined"] * POOL,
        timeout=120,
        what="the pilots' slots to say there is no deadline",
    )
    slots = pool.pilot_slots()
    # the deadline comes while the pilots run: their startds learn it, and take only what fits
    assert installation.ctl("drain", "--by", "30m").returncode == 0
    deadline = read_drain_by(installation.rundir)
    assert deadline is not None
    wait_until(
        lambda: pool.pilot_slot_attribute("PlanctonShutdownTime") == [str(int(deadline))] * POOL,
        timeout=60,
        what="the pilots' slots to advertise the deadline",
    )
    assert pool.pilot_slots() == slots  # the same pilots
    # the job that would outlast the deadline comes first in the queue, beside idle slots
    too_long = pool.submit(1, seconds=1, allowed_seconds=3600)
    fits = pool.submit(1, seconds=1, allowed_seconds=60)
    wait_until(pool.completed, timeout=120, what="the job that fits to complete")
    assert set(pool.completed()) == {f"{fits}.0"}
    assert f"{too_long}.0" not in pool.events_by_job(EXECUTE)
    assert pool.queue() == {f"{too_long}.0": IDLE}
