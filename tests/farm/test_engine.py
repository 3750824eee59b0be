"""One node's container engine dies with its pilots while they run jobs: the jobs go back to
the queue and complete on the other nodes, each exactly once; the node's daemon keeps running
and says the engine is gone (the shipped PlanctonEngineDown alert fires for that node alone);
when the engine is started again the daemon recovers by itself, runs its pilots again, and
nothing of the killed pilots is left: no container, cgroup or mount.

The engine is killed outright, dockerd, its containerd, the pilots' shims and the pilots'
processes by their pids with SIGKILL, as when the engine's service is killed with its control
group: the jobs die with the pilots, and the schedd queues each again once its lease runs out
(one minute in the example's central manager).
"""

import os
import time

from plancton.platform.cgroups import CGROUP_ROOT
from tests.farm.conftest import FIGURES
from tests.farm.farm import Farm
from tests.farm.ledger import mounts_below
from tests.farm.node import Node
from tests.farm.support import services, wait_until
from tests.farm.test_alerts import ALERT_SECONDS
from tests.farm.test_htcondor import (
    PILOTS_PER_NODE,
    SLOTS_SECONDS,
    every_pilot_listed,
    execute_hosts,
    of_cluster,
    rerun_elsewhere,
)
from tests.farm.watch import FARM_ALERT_FOR

#: Long enough that every job still runs when the engine is killed.
JOB_SECONDS = 60


def container_ids(node: Node, running_only: bool = False) -> set[str]:
    """Return the ids of the containers of the node's engine (every one, or the running ones)."""
    with node.engine.client() as client:
        return {entry["Id"] for entry in client.containers(all=not running_only)}


def neither_running_nor_spare(node: Node) -> list[str]:
    """Return the containers of the node's engine that are neither running nor a spare pilot
    waiting to start, each with its state."""
    with node.engine.client() as client:
        entries = client.containers(all=True)
    return [
        f"{entry['Names'][0]} {entry['State']}"
        for entry in entries
        if entry["State"] != "running" and not services.is_waiting_spare(entry)
    ]


def pilot_cgroups(farm: Farm) -> set[str]:
    """Return the names of the cgroups below the pilots' parent, in every hierarchy (one per
    pilot of any node: the container's id)."""
    names: set[str] = set()
    for parent in services.instance_cgroups(farm.layout.instance):
        folder = os.path.join(CGROUP_ROOT, parent)
        names.update(entry.name for entry in os.scandir(folder) if entry.is_dir())
    return names


def engine_mounts(node: Node) -> set[str]:
    """Return the mounts below the node's engine folder that are not its running containers'
    own (root file system, network namespace), relative to that folder: the engine's own."""
    with node.engine.client() as client:
        containers = [client.inspect_container(entry["Id"]) for entry in client.containers()]
    theirs = {container["GraphDriver"]["Data"]["MergedDir"] for container in containers}
    theirs |= {container["NetworkSettings"]["SandboxKey"] for container in containers}
    folder = node.engine.folder
    return {os.path.relpath(point, folder) for point in mounts_below(folder) if point not in theirs}


def test_a_killed_engine_loses_its_jobs_to_the_other_nodes_and_its_daemon_recovers_once_it_is_back(
    farm: Farm,
) -> None:
    pool, prometheus = farm.pool, farm.prometheus
    assert pool is not None and prometheus is not None and len(farm.nodes) >= 2, "this test needs two nodes or more"
    victim, healthy = farm.nodes[-1], farm.nodes[0]
    target = farm.prometheus_target(victim)
    wait_until(lambda: every_pilot_listed(farm), SLOTS_SECONDS, "the pool to list every node's pilots")
    # a job for every pilot listed, so that the node whose engine is killed has jobs too
    jobs = max(PILOTS_PER_NODE * len(farm.nodes), len(pool.pilot_slots()))
    cluster = pool.submit(jobs, seconds=JOB_SECONDS)
    wait_until(lambda: len(execute_hosts(pool, cluster)) >= jobs, SLOTS_SECONDS, "every job to run")
    nodes = farm.nodes_of_pilots([host for _, host in execute_hosts(pool, cluster)])
    finished = of_cluster(pool.completed(), cluster)
    on_victim = sorted(
        job for job, host in execute_hosts(pool, cluster) if nodes[host] == victim.number and job not in finished
    )
    assert on_victim, "no job runs on the node whose engine is killed"
    daemon = victim.status()["pid"]
    # the pilots that run (a spare made ahead of need has no process to kill)
    killed = container_ids(victim, running_only=True)

    victim.engine.kill()
    killed_at = time.time()

    # the daemon lives on, and tells its status and the farm's Prometheus that the engine is gone
    wait_until(lambda: victim.status()["engine_error"], 60, f"{victim.name}'s daemon to see its engine gone")
    assert victim.ctl("status").returncode == 0
    wait_for = f"PlanctonEngineDown to fire for {target} alone"
    wait_until(lambda: prometheus.alerting("PlanctonEngineDown") == {target}, ALERT_SECONDS, wait_for)
    FIGURES[f"alert PlanctonEngineDown (for: {FARM_ALERT_FOR}): engine killed to firing, s"] = round(
        time.time() - killed_at, 1
    )

    figure = "engine killed to its jobs running on other nodes, s"
    rerun_nodes = rerun_elsewhere(farm, pool, cluster, jobs, on_victim, killed_at, figure)
    assert len(rerun_nodes) == len(on_victim) and victim.number not in rerun_nodes.values(), rerun_nodes

    # the engine comes back; nobody touches the daemon
    victim.engine.start(farm.ledger)
    restarted = time.time()

    def recovered() -> bool:
        status = victim.status()
        return status["engine_error"] is None and len(victim.running_pilots()) == PILOTS_PER_NODE

    wait_until(recovered, SLOTS_SECONDS, f"{victim.name}'s daemon to run its pilots again")
    FIGURES["engine started again to its node running its pilots, s"] = round(time.time() - restarted, 1)
    assert victim.status()["pid"] == daemon
    cleared = "PlanctonEngineDown to clear"
    wait_until(lambda: not prometheus.alerting("PlanctonEngineDown", None), ALERT_SECONDS, cleared)

    # nothing of the killed pilots is left: no container, no cgroup, no mount
    assert not container_ids(victim) & killed
    wait_until(lambda: not neither_running_nor_spare(victim), 60, "the engine to hold only pilots that run or wait")

    def only_live_cgroups() -> bool:
        cgroups = pilot_cgroups(farm)
        return not cgroups & killed and container_ids(victim, running_only=True) <= cgroups

    wait_until(only_live_cgroups, 60, "the killed pilots' cgroups to go (and the running pilots' to be found)")
    wait_until(
        lambda: engine_mounts(victim) == engine_mounts(healthy), 60, "the engine to hold no mount of a killed pilot"
    )
