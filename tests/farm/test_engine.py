"""One node's container engine dies with its pilots while they run jobs, and at once another
node is cut off the farm network for two minutes, while a third node keeps running. Nobody
touches either daemon. The engine's daemon keeps running and says its engine is gone (the
shipped PlanctonEngineDown alert fires for that node alone); its jobs go back to the queue once
their lease runs out and complete on the third node. The cut node's daemon keeps running and
stops, pauses or kills none of its pilots while Prometheus cannot scrape it (PlanctonNodeAbsent
fires for that node alone); its jobs are not queued again: the schedd sees no disconnection in
two minutes of stalled connections (a job's lease runs only once its shadow has seen one, as it
does at once for the killed engine's), so it counts them as running, and the results of those
that ended meanwhile reach it when the link is back, each job completing once. Once the engine
is started again and the link is back, each daemon recovers by itself: the first runs its
pilots again, the second's pilots advertise again to the pool and Prometheus scrapes it again;
and nothing is left of the pilots that died or ended cut off: no container that neither runs
nor waits as a spare, no cgroup, no mount.

The engine is killed outright, dockerd, its containerd, the pilots' shims and the pilots'
processes by their pids with SIGKILL, as when the engine's service is killed with its control
group: the jobs die with the pilots. The other node is cut off by taking its port on the farm's
bridge down, the hub's end of its veth pair (``ip link set nodeN down`` in the hub's network
namespace), for :data:`CUT_SECONDS`, and up again afterwards, also when the test fails: the
node's own end loses its carrier, as when its cable is pulled, and keeps its address; its
pilots' connections to the pool stall in flight, with nothing to reset them.

The kill and the cut share one test to save the tier's time, which the cut's two minutes would
otherwise add to; the cut needs a third node to take the killed engine's jobs, so on a farm of
two nodes the test is skipped.
"""

import os
import time
from collections.abc import Callable

import pytest

from plancton.platform.cgroups import CGROUP_ROOT
from tests.farm.conftest import FIGURES
from tests.farm.farm import Farm
from tests.farm.ledger import mounts_below
from tests.farm.node import Node
from tests.farm.support import htcondor_pool, services, wait_until
from tests.farm.test_alerts import ALERT_SECONDS
from tests.farm.test_htcondor import (
    PILOTS_PER_NODE,
    SLOTS_SECONDS,
    every_pilot_listed,
    execute_hosts,
    nodes_that_last_ran,
    of_cluster,
    ran_again,
)
from tests.farm.watch import FARM_ALERT_FOR

#: How long the node is cut off the farm network.
CUT_SECONDS = 120
#: Long enough that every job still runs when the engine is killed and the other node cut off
#: (at once after); short enough that the killed engine's jobs, queued again a minute or so
#: after (their lease), run again on the third node before the cut ends, and that the cut
#: node's jobs end while it is cut off, their results held up with their connections.
JOB_SECONDS = 20
#: What a daemon's log says when it acts on a running pilot: never, of the cut node's, during the cut.
ACTING_ON_PILOTS = ("stopping pilot", "killing pilot", "paused pilot")


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


def only_live_pilots(node: Node) -> Callable[[], bool]:
    """Return a condition: the node's engine holds no container but pilots that run or wait as spares."""
    return lambda: not neither_running_nor_spare(node)


def only_mounts_of(node: Node, healthy: Node) -> Callable[[], bool]:
    """Return a condition: the node's engine holds the mounts of its own that a healthy node's
    engine holds, and no other (none of a pilot that ended)."""
    return lambda: engine_mounts(node) == engine_mounts(healthy)


def recovered(node: Node) -> bool:
    """Return whether the node's daemon reaches its engine and runs its pilots."""
    return node.status()["engine_error"] is None and len(node.running_pilots()) == PILOTS_PER_NODE


def running_on(farm: Farm, pool: htcondor_pool.Pool, cluster: str, node: Node) -> list[str]:
    """Return the jobs of a cluster that started on a pilot of the node and have not completed."""
    hosts = execute_hosts(pool, cluster)
    nodes = farm.nodes_of_pilots([host for _, host in hosts])
    finished = of_cluster(pool.completed(), cluster)
    return sorted(job for job, host in hosts if nodes.get(host) == node.number and job not in finished)


def heard_from_since(pool: htcondor_pool.Pool, since: float) -> set[str]:
    """Return the machines of the pilots' slots that the collector heard from at ``since`` or
    later (their LastHeardFrom): not the ads of pilots that have since gone unheard."""
    lines = pool.run("condor_status", "-constraint", "PLANCTON_PILOT =?= true", "-af", "Machine", "LastHeardFrom")
    return {machine for machine, heard in (line.split() for line in lines.splitlines()) if int(heard) >= since}


def pilots_advertise_since(node: Node, pool: htcondor_pool.Pool, since: float) -> bool:
    """Return whether the node runs its pilots and the collector heard from each since ``since``."""
    running = node.running_pilots()
    heard = heard_from_since(pool, since)
    listed = {pilot for pilot in running if any(machine.endswith(f"-{pilot}") for machine in heard)}
    return len(running) == PILOTS_PER_NODE and listed == running


def wait_for_each(conditions: dict[str, tuple[float, Callable[[], bool]]], bound: float, what: str) -> None:
    """Wait until each condition has held (the test fails after ``bound`` seconds); record in
    FIGURES, under each condition's name, the seconds from its moment to when it first held.

    Args:
        conditions: by name, the moment (wall clock) to count from and the condition.
    """
    held: dict[str, float] = {}

    def each_held() -> bool:
        for name, (since, holds) in conditions.items():
            if name not in held and holds():
                held[name] = round(time.time() - since, 1)
        return len(held) == len(conditions)

    wait_until(each_held, bound, what)
    FIGURES.update(held)


def test_an_engine_killed_and_a_node_cut_off_each_job_completes_once_and_both_daemons_recover_by_themselves(
    farm: Farm,
) -> None:
    pool, prometheus = farm.pool, farm.prometheus
    assert pool is not None and prometheus is not None
    if len(farm.nodes) < 3:
        pytest.skip("a third node must take the killed engine's jobs while the other is cut off: --nodes 3 or more")
    healthy, cut, victim = farm.nodes[0], farm.nodes[1], farm.nodes[-1]
    victim_target, cut_target = farm.prometheus_target(victim), farm.prometheus_target(cut)
    wait_until(lambda: every_pilot_listed(farm), SLOTS_SECONDS, "the pool to list every node's pilots")
    # a job for every pilot listed, so that both faulty nodes have jobs too
    jobs = max(PILOTS_PER_NODE * len(farm.nodes), len(pool.pilot_slots()))
    cluster = pool.submit(jobs, seconds=JOB_SECONDS)
    wait_until(lambda: len(execute_hosts(pool, cluster)) >= jobs, SLOTS_SECONDS, "every job to run")
    daemons = {node.number: node.status()["pid"] for node in (victim, cut)}
    # the pilots that run (a spare made ahead of need has no process to kill)
    killed = container_ids(victim, running_only=True)
    before_cut = container_ids(cut)
    log_before_cut = len(cut.log())

    victim.engine.kill()
    killed_at = time.time()
    with cut.cut_off():
        cut_at = time.time()
        on_victim, on_cut = (running_on(farm, pool, cluster, node) for node in (victim, cut))
        assert on_victim and on_cut, f"jobs on {victim.name}: {on_victim}, on {cut.name}: {on_cut}"

        # the engine's daemon lives on and says the engine is gone; each fault fires its alert
        # for its node alone: the cut node's for its absence, as Prometheus cannot scrape it
        wait_until(lambda: victim.status()["engine_error"], 60, f"{victim.name}'s daemon to see its engine gone")
        assert victim.ctl("status").returncode == 0
        alerts = {
            f"alert PlanctonEngineDown (for: {FARM_ALERT_FOR}): engine killed to firing, s": (
                killed_at, lambda: prometheus.alerting("PlanctonEngineDown") == {victim_target}
            ),
            f"alert PlanctonNodeAbsent (for: {FARM_ALERT_FOR}): node cut off to firing, s": (
                cut_at, lambda: prometheus.alerting("PlanctonNodeAbsent") == {cut_target}
            ),
        }  # fmt: skip
        wait_for_each(alerts, ALERT_SECONDS, "PlanctonEngineDown and PlanctonNodeAbsent to fire, each for its node")

        # the schedd queues the killed engine's jobs again once their lease runs out, and they
        # run on the third node; then the engine comes back, nobody touching its daemon
        rerun = "the killed engine's jobs to run on other nodes before the cut ends"
        wait_until(lambda: ran_again(pool, cluster, on_victim), cut_at + CUT_SECONDS - time.time(), rerun)
        FIGURES["engine killed to its jobs running on other nodes, s"] = round(time.time() - killed_at, 1)
        victim.engine.start(farm.ledger)
        restarted = time.time()
        wait_until(lambda: recovered(victim), SLOTS_SECONDS, f"{victim.name}'s daemon to run its pilots again")
        FIGURES["engine started again to its node running its pilots, s"] = round(time.time() - restarted, 1)
        assert victim.status()["pid"] == daemons[victim.number]

        # all the while, the cut node's daemon runs and leaves its pilots alone
        time.sleep(max(0.0, cut_at + CUT_SECONDS - time.time()))
        assert cut.status()["pid"] == daemons[cut.number]
        during = cut.log()[log_before_cut:]
        acted = [line for line in during.splitlines() if any(action in line for action in ACTING_ON_PILOTS)]
        assert not acted, during[-3000:]
        assert prometheus.target_healths()[cut_target] == "down"
        # the schedd saw no disconnection in stalled connections: the cut node's jobs are still
        # running for it, their lease never ran out, and none was queued again
        queue = pool.queue()
        assert all(queue.get(job) == htcondor_pool.RUNNING for job in on_cut), (on_cut, queue)
    reconnected = time.time()

    # back on the network, the cut node's jobs, which ended meanwhile, are reported complete,
    # and the daemon recovers by itself: its pilots advertise again to the pool, and
    # Prometheus scrapes it again
    recovery = {
        f"node cut off for {CUT_SECONDS} s: reconnected to its jobs completing, s": (
            reconnected, lambda: set(on_cut) <= set(of_cluster(pool.completed(), cluster))
        ),
        "node cut off: reconnected to its pilots advertising again, s": (
            reconnected, lambda: pilots_advertise_since(cut, pool, reconnected)
        ),
        "node cut off: reconnected to Prometheus scraping it again, s": (
            reconnected, lambda: prometheus.target_healths()[cut_target] == "up"
        ),
    }  # fmt: skip
    back = f"{cut.name}'s jobs to complete, its pilots to advertise and Prometheus to scrape it"
    wait_for_each(recovery, SLOTS_SECONDS, back)
    cleared = "PlanctonNodeAbsent to clear"
    wait_until(lambda: not prometheus.alerting("PlanctonNodeAbsent", None), ALERT_SECONDS, cleared)
    assert cut.status()["pid"] == daemons[cut.number]

    cleared = "PlanctonEngineDown to clear"
    wait_until(lambda: not prometheus.alerting("PlanctonEngineDown", None), ALERT_SECONDS, cleared)

    # every job completed once: the killed engine's on other nodes, the cut node's where they
    # ran, each run once
    last = nodes_that_last_ran(farm, pool, cluster, jobs, on_victim + on_cut)
    assert all(last.get(job, victim.number) != victim.number for job in on_victim), (on_victim, last)
    assert all(last.get(job) == cut.number for job in on_cut), (on_cut, last)
    executions = of_cluster(pool.events_by_job(htcondor_pool.EXECUTE), cluster)
    assert all(executions[job] == 1 for job in on_cut), (on_cut, executions)

    # nothing is left of the killed pilots and of those that ended cut off: no container but
    # pilots that run or wait as spares, no cgroup, no mount
    assert not container_ids(victim) & killed
    for node in (victim, cut):
        wait_until(only_live_pilots(node), 60, f"{node.name}'s engine to hold only pilots that run or wait")

    def only_live_cgroups() -> bool:
        cgroups = pilot_cgroups(farm)
        ended = killed | (before_cut - container_ids(cut))
        running = container_ids(victim, running_only=True) | container_ids(cut, running_only=True)
        return not cgroups & ended and running <= cgroups

    wait_until(only_live_cgroups, 60, "the ended pilots' cgroups to go (and the running pilots' to be found)")
    for node in (victim, cut):
        wait_until(only_mounts_of(node, healthy), 60, f"{node.name}'s engine to hold no mount of an ended pilot")
