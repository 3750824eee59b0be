"""The farm feeding one HTCondor pool: jobs run on pilots of every node, each completes
exactly once; and when one node's owner comes back to the keyboard, only that node's pilots
pause and stop, its jobs are evicted, queued again and completed on the other nodes.
"""

import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.farm.conftest import FIGURES
from tests.farm.farm import SITE_POLICY, Farm
from tests.farm.node import Node
from tests.farm.support import htcondor_pool, wait_until

#: An execute event names the startd's host: the pilot's host name, which ends with its name.
EXECUTE_HOST = re.compile(r"alias=([\w.-]+)")
PILOTS_PER_NODE = int(SITE_POLICY["max_docks"])
#: Generous bounds on waits, so that a broken farm fails instead of hanging.
SLOTS_SECONDS = 180
JOBS_SECONDS = 420


def of_cluster(counts: Counter[str], cluster: str) -> dict[str, int]:
    """Return the counts of one cluster's jobs."""
    return {job: count for job, count in counts.items() if job.startswith(f"{cluster}.")}


def execute_hosts(pool: htcondor_pool.Pool, cluster: str) -> list[tuple[str, str]]:
    """Return (job, host of the pilot) for each execute event of a cluster's jobs, in order."""
    return [
        (event.job, EXECUTE_HOST.findall(event.text)[-1])
        for event in pool.events()
        if event.code == htcondor_pool.EXECUTE and event.job.startswith(f"{cluster}.")
    ]


def every_pilot_listed(farm: Farm) -> bool:
    """Return whether the pool lists a slot for every pilot of every node."""
    assert farm.pool is not None
    return len(farm.pool.pilot_slots()) >= PILOTS_PER_NODE * len(farm.nodes)


def assert_each_job_completed_once_and_right(pool: htcondor_pool.Pool, cluster: str, jobs: int) -> None:
    """Check what the submitter sees: each job of the cluster terminated exactly once, with
    exit code 0 and the right output, and none is left in the queue."""
    every_job = {f"{cluster}.{process}": 1 for process in range(jobs)}
    assert of_cluster(pool.completed(), cluster) == every_job, [event.text for event in pool.events()][-10:]
    assert pool.results(cluster) == {process: htcondor_pool.expected_result(process) for process in range(jobs)}
    assert not [job for job in pool.queue() if job.startswith(f"{cluster}.")]


def ran_again(pool: htcondor_pool.Pool, cluster: str, again: list[str]) -> bool:
    """Return whether each of the jobs ``again`` of a cluster started a second time."""
    executions = of_cluster(pool.events_by_job(htcondor_pool.EXECUTE), cluster)
    return all(executions.get(job, 0) >= 2 for job in again)


def rerun_elsewhere(
    farm: Farm, pool: htcondor_pool.Pool, cluster: str, jobs: int, again: list[str], since: float, figure: str
) -> dict[str, int]:
    """Wait until the jobs ``again`` of a cluster ran a second time (``figure`` records the
    seconds since ``since``), then until all its ``jobs`` completed, each once and right;
    return the node that last ran each of those jobs (:func:`nodes_that_last_ran`)."""
    wait_until(lambda: ran_again(pool, cluster, again), JOBS_SECONDS, f"{len(again)} jobs to run again")
    FIGURES[figure] = round(time.time() - since, 1)
    return nodes_that_last_ran(farm, pool, cluster, jobs, again)


def nodes_that_last_ran(
    farm: Farm, pool: htcondor_pool.Pool, cluster: str, jobs: int, again: list[str]
) -> dict[str, int]:
    """Wait until all ``jobs`` of a cluster completed, each once and right; return the node
    that last ran each of the jobs ``again``, by job (a job that no node's pilot ran is left out)."""
    wait_until(lambda: len(of_cluster(pool.completed(), cluster)) >= jobs, JOBS_SECONDS, f"{jobs} jobs to complete")
    assert_each_job_completed_once_and_right(pool, cluster, jobs)
    last_hosts = dict(execute_hosts(pool, cluster))
    nodes = farm.nodes_of_pilots([last_hosts[job] for job in again])
    return {job: nodes[last_hosts[job]] for job in again if last_hosts[job] in nodes}


def test_jobs_run_on_pilots_of_every_node_and_each_completes_once(farm: Farm) -> None:
    pool = farm.pool
    assert pool is not None
    wait_until(lambda: every_pilot_listed(farm), SLOTS_SECONDS, "the pool to list every node's pilots")
    # one job for each pilot, and a second round on the pilots that replace them
    jobs = 2 * PILOTS_PER_NODE * len(farm.nodes)
    cluster = pool.submit(jobs, seconds=5)

    wait_until(lambda: len(of_cluster(pool.completed(), cluster)) >= jobs, JOBS_SECONDS, f"{jobs} jobs to complete")
    assert_each_job_completed_once_and_right(pool, cluster, jobs)
    hosts = execute_hosts(pool, cluster)
    assert len(hosts) == jobs and len({host for _, host in hosts}) == jobs, hosts  # one pilot per job
    nodes = farm.nodes_of_pilots([host for _, host in hosts])
    assert len(nodes) == jobs, (hosts, nodes)  # every job ran in a pilot that a node's daemon started
    assert set(nodes.values()) == {node.number for node in farm.nodes}, nodes


@pytest.fixture
def returning_owner(farm: Farm) -> Iterator[Node]:
    """The node whose owner comes back; away again afterwards, for the tests that follow."""
    node = farm.nodes[0]
    yield node
    node.owner_away()


def test_an_owner_coming_back_stops_only_that_nodes_pilots_and_its_jobs_complete_elsewhere(
    farm: Farm, returning_owner: Node
) -> None:
    pool = farm.pool
    assert pool is not None and len(farm.nodes) >= 2, "this test needs two nodes or more"
    others = [node for node in farm.nodes if node is not returning_owner]
    wait_until(lambda: every_pilot_listed(farm), SLOTS_SECONDS, "the pool to list every node's pilots")
    jobs = PILOTS_PER_NODE * len(farm.nodes)
    cluster = pool.submit(jobs, seconds=30)
    wait_until(lambda: len(execute_hosts(pool, cluster)) >= jobs, SLOTS_SECONDS, "every job to run")
    nodes = farm.nodes_of_pilots([host for _, host in execute_hosts(pool, cluster)])
    finished = of_cluster(pool.completed(), cluster)
    on_returning = sorted(
        job
        for job, host in execute_hosts(pool, cluster)
        if nodes[host] == returning_owner.number and job not in finished
    )
    assert on_returning, "no job runs on the returning owner's node"
    logs_before = {node.number: len(node.log()) for node in farm.nodes}

    back = returning_owner.owner_back()

    def all_paused() -> bool:
        states = returning_owner.pilot_states()
        return bool(states) and set(states.values()) == {"paused"}

    wait_until(all_paused, 60, "the returning owner's pilots to pause")
    FIGURES["owner back to pilots paused, s"] = round(time.time() - back, 1)

    def evicted() -> bool:
        return set(of_cluster(pool.events_by_job(htcondor_pool.EVICTED), cluster)) >= set(on_returning)

    wait_until(evicted, 120, "the returning owner's jobs to be evicted")
    FIGURES["owner back to jobs evicted, s"] = round(time.time() - back, 1)

    figure = "owner back to evicted jobs running elsewhere, s"
    rerun_nodes = rerun_elsewhere(farm, pool, cluster, jobs, on_returning, back, figure)
    # the evicted jobs ran again on the other nodes, and the returning owner's node started none
    assert set(rerun_nodes.values()) <= {node.number for node in others} and len(rerun_nodes) == len(on_returning)
    log = returning_owner.log()[logs_before[returning_owner.number] :]
    assert "paused pilot" in log and "(owner reclaim)" in log, log[-3000:]
    assert "started pilot" not in log
    assert "keyboard used" in returning_owner.ctl("status", "--why").stdout
    # no other node's pilot was paused or stopped: each ran its job and left by itself
    for node in others:
        log = node.log()[logs_before[node.number] :]
        assert "paused pilot" not in log and "stopping pilot" not in log, (node.name, log[-3000:])
        assert re.search(r"pilot \S+ exited with code 99 ", log), (node.name, log[-3000:])

    # the returning owner's pilots stopped; their removal waits until the owner is idle, so
    # that the engine's work of removing them is not done in the owner's time
    def all_stopped() -> dict[str, str]:
        states = returning_owner.pilot_states()
        return states if set(states.values()) == {"exited"} else {}

    stopped = wait_until(all_stopped, 60, "the returning owner's pilots to stop")
    returning_owner.owner_away()
    wait_until(lambda: not set(returning_owner.pilot_states()) & set(stopped), 60, "the stopped pilots to go")
    wait_until(returning_owner.pilot_states, 60, "pilots to start again once the owner left")
