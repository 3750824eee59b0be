"""The configuration repository as the farm's control plane: every commit is signed with the
site's ssh key, and every node was bootstrapped with ``--trust`` and the file of that key.

- A signed commit with a new pilot image and ``rollout: {window: ...}`` reaches the nodes in
  stages: each node takes it at its offset into the window, which a hash of its host name sets
  (:func:`plancton.core.rollout.rollout_offset`), and only then runs pilots of that image. An
  unsigned commit pushed on top is refused by every node, which keeps its configuration.
- A drain deadline committed for the whole farm (``drain_by``): the pilots see it in
  ``$MACHINEFEATURES/shutdowntime``, their startds take the jobs that can finish by it and
  leave the others in the queue, and no pilot runs on any node after it. A commit that removes
  it brings the pilots back.

The nodes' updates run in rounds a few seconds apart, as each node's timer would
(:class:`tests.farm.farm.UpdateRounds`). The rollback of a commit whose pilots cannot start is
in test_alerts.py, with the alert that names the node.
"""

import datetime
import re
import time
from collections.abc import Iterator

import pytest

from plancton.core.rollout import rollout_offset
from tests.farm.conftest import FIGURES
from tests.farm.farm import PILOT_IMAGE, SITE_POLICY, Farm, UpdateRounds
from tests.farm.node import Node
from tests.farm.support import htcondor_pool, wait_until
from tests.farm.test_htcondor import (
    JOBS_SECONDS,
    PILOTS_PER_NODE,
    SLOTS_SECONDS,
    assert_each_job_completed_once_and_right,
    every_pilot_listed,
    of_cluster,
)

#: The pilot image of the new commit: the farm's image under a second name in every engine.
NEW_IMAGE = "plancton-htcondor:site-2"
#: The rollout window of the new image, and how long after its turn a node may take to take it
#: (its first round of updates may come a round late, and a round takes seconds on a loaded machine).
WINDOW_SECONDS = 40
TURN_BOUND_SECONDS = 30
#: Two nodes whose offsets lie closer than this may take the commit in the same round (a round
#: takes seconds on a loaded machine), in either order; farther apart, the earlier offset comes
#: first.
SAME_ROUND_SECONDS = 12
#: How far ahead the farm's drain deadline lies when it is committed, and how long a pilot must
#: be able to run before it for a pilot to start.
DRAIN_AHEAD_SECONDS = 80
DRAIN_MIN_RUNTIME = 20
#: The jobs of the drain: what each says it may run (allowed_execute_duration), and runs.
FITS_ALLOWED_SECONDS = 20
TOO_LONG_ALLOWED_SECONDS = 3600
JOB_SECONDS = 2
UNTRUSTED = 'plancton_config_update_failed{reason="untrusted"} == 1'
#: A line of a node's log that says a pilot started, and the time it begins with (local time).
STARTED_AT = re.compile(r"^(\S+ \S+) INFO \S+: started pilot ", re.MULTILINE)
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"
#: How long after the loop that chose to start a pilot its start may be logged, at most.
START_LOGGED_SECONDS = 10


@pytest.fixture
def new_image(farm: Farm) -> Iterator[str]:
    """The farm's pilot image under :data:`NEW_IMAGE` in every node's engine; the name is
    removed afterwards (the image stays under its own)."""
    for node in farm.nodes:
        node.engine.docker("tag", PILOT_IMAGE, NEW_IMAGE)
    yield NEW_IMAGE
    for node in farm.nodes:
        node.engine.docker("rmi", NEW_IMAGE)


def runs_the_image(node: Node, image: str) -> bool:
    """Return whether one of the node's pilots runs ``image``."""
    return any(entry["Image"] == image and entry["State"] == "running" for entry in node.pilot_entries().values())


def test_a_signed_commit_reaches_the_nodes_in_stages_and_an_unsigned_one_on_top_is_refused_by_every_node(
    farm: Farm, new_image: str, site_policy_restored: None
) -> None:
    offsets = {node.number: rollout_offset(node.host_name, WINDOW_SECONDS) for node in farm.nodes}
    commit = farm.commit_config(
        "A new pilot image, and one pilot more, over 40 s",
        docker_image=new_image,
        max_docks=farm.one_pilot_more(),
        rollout={"window": f"{WINDOW_SECONDS}s"},
    )
    rounds = UpdateRounds(farm)

    def in_stages() -> bool:
        # a node whose turn has not come runs no pilot of the new image
        took = rounds.took(commit)
        waiting = [node for node in farm.nodes if node.number not in took]
        assert not [node.name for node in waiting if new_image in node.pilot_images()], took
        return not waiting

    rounds.until(in_stages, WINDOW_SECONDS + TURN_BOUND_SECONDS + 60, "every node to take the commit in its turn")
    took = rounds.took(commit)
    figure = f"staged rollout over {WINDOW_SECONDS} s: each node's offset and when it took the commit, s"
    FIGURES[figure] = {
        node.host_name: [round(offsets[node.number], 1), round(took[node.number], 1)] for node in farm.nodes
    }
    for node in farm.nodes:
        # never before its turn (the window counts from its first update, after the commit),
        # and in the rounds after it
        assert offsets[node.number] <= took[node.number] <= offsets[node.number] + TURN_BOUND_SECONDS, figure
        if offsets[node.number] > SAME_ROUND_SECONDS:  # past its first round: it said when it would take it
            said = rounds.said[node.number][0]
            assert f"commit {commit[:12]} rolls out over {WINDOW_SECONDS}s: this node takes it at" in said, (
                node.name,
                said,
            )
    for first in farm.nodes:
        for later in farm.nodes:
            if offsets[later.number] - offsets[first.number] > SAME_ROUND_SECONDS:
                assert took[first.number] < took[later.number], FIGURES[figure]
    wait_until(
        lambda: all(runs_the_image(node, new_image) for node in farm.nodes),
        SLOTS_SECONDS,
        "every node to run a pilot of the new image",
    )
    FIGURES[f"staged rollout over {WINDOW_SECONDS} s: commit to every node running the new image, s"] = round(
        time.time() - rounds.begun, 1
    )

    # an unsigned commit on top: every node refuses it and keeps what it runs
    revisions = {node.number: node.status()["config_revision"] for node in farm.nodes}
    unsigned = farm.commit_config("One pilot per node, unsigned", signed=False, max_docks=1)
    for node, done in zip(farm.nodes, farm.on_every_node(Node.try_update), strict=True):
        assert done.returncode == 1, (node.name, done.stdout, done.stderr)
        assert f"refused commit {unsigned[:12]}: it is not signed" in done.stderr, (node.name, done.stderr)
        status = node.status()
        assert status["config_update"]["outcome"] == "untrusted", (node.name, status["config_update"])
        assert status["config_revision"] == revisions[node.number]
        assert node.checkout_head() == commit
    prometheus = farm.prometheus
    assert prometheus is not None
    every_node = {farm.prometheus_target(node) for node in farm.nodes}
    wait_until(
        lambda: {series["metric"]["instance"] for series in prometheus.query(UNTRUSTED)} == every_node,
        60,
        "Prometheus to see every node refuse the unsigned commit",
    )
    assert all(runs_the_image(node, new_image) for node in farm.nodes)


def pilot_starts(log: str) -> list[float]:
    """Given a part of a node's log, return when its daemon started each pilot (Unix seconds)."""
    return [datetime.datetime.strptime(moment, LOG_TIME).timestamp() for moment in STARTED_AT.findall(log)]


def iso_time(moment: float) -> str:
    """Given Unix seconds, return the ISO time in UTC with its zone, as a site writes drain_by."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat()


def test_a_farm_wide_drain_deadline_lets_only_jobs_that_can_finish_start_and_leaves_no_pilot_after_it(
    farm: Farm, site_policy_restored: None
) -> None:
    pool = farm.pool
    assert pool is not None
    wait_until(lambda: every_pilot_listed(farm), SLOTS_SECONDS, "the pool to list every node's pilots")
    logs_before = {node.number: len(node.log()) for node in farm.nodes}
    deadline = float(int(time.time()) + DRAIN_AHEAD_SECONDS)
    committed = time.time()
    commit = farm.commit_config("Drain the farm", drain_by=iso_time(deadline), drain_min_runtime=DRAIN_MIN_RUNTIME)
    for node, said in zip(farm.nodes, farm.on_every_node(Node.update), strict=True):
        assert f"updated to commit {commit[:12]}" in said, (node.name, said)

    def deadline_everywhere() -> bool:
        for node in farm.nodes:
            drain_by = node.status()["drain_by"]
            if not drain_by or drain_by["deadline"] != deadline or not drain_by["source"].endswith("config.yaml"):
                return False
        return True

    wait_until(deadline_everywhere, 60, "every node to have the deadline in force")
    # every pilot, those started before the commit too, sees it; and so does its startd
    for node in farm.nodes:
        seen = node.shutdowntimes_seen()
        assert seen and set(seen.values()) == {str(int(deadline))}, (node.name, seen)
    # every slot, not a number of them: a node may still run more pilots than max_docks from
    # the tests before, and a startd that has not read the file yet takes any job
    slots = PILOTS_PER_NODE * len(farm.nodes)

    def every_slot_has_the_deadline() -> bool:
        advertised = pool.pilot_slot_attribute("PlanctonShutdownTime")
        return len(advertised) >= slots and set(advertised) == {str(int(deadline))}

    wait_until(every_slot_has_the_deadline, 60, "every pilot's slot to advertise the deadline")
    FIGURES["drain deadline: commit to every pilot's slot advertising it, s"] = round(time.time() - committed, 1)

    # the jobs that cannot finish by the deadline come first in the queue, beside idle slots
    too_long = pool.submit(len(farm.nodes), seconds=JOB_SECONDS, allowed_seconds=TOO_LONG_ALLOWED_SECONDS)
    fits = pool.submit(slots, seconds=JOB_SECONDS, allowed_seconds=FITS_ALLOWED_SECONDS)
    wait_until(lambda: len(of_cluster(pool.completed(), fits)) >= slots, JOBS_SECONDS, f"{slots} jobs to complete")
    assert_each_job_completed_once_and_right(pool, fits, slots)
    FIGURES["drain deadline: the jobs that fit it completed, s before it"] = round(deadline - time.time(), 1)

    def no_pilot_running() -> bool:
        return not any(node.running_pilots() for node in farm.nodes)

    # (between a pilot's end and its replacement's start, a node may run none for a moment)
    time.sleep(max(0.0, deadline - time.time()))
    wait_until(no_pilot_running, 60, "no pilot running on any node after the deadline")
    FIGURES["drain deadline to no pilot running on any node, s"] = round(time.time() - deadline, 1)
    assert not of_cluster(pool.events_by_job(htcondor_pool.EXECUTE), too_long)
    held_back = {job: status for job, status in pool.queue().items() if job.startswith(f"{too_long}.")}
    assert held_back == dict.fromkeys((f"{too_long}.{job}" for job in range(len(farm.nodes))), htcondor_pool.IDLE)
    # five loops later, no pilot at all: the deadline holds them; none started that the
    # deadline would cut shorter than drain_min_runtime (a start is logged once its container
    # runs, a few seconds after the loop chose it)
    time.sleep(5 * float(SITE_POLICY["main_sleep"]))
    for node in farm.nodes:
        status = node.status()
        assert "deadline" in status["holds"] and not status["pilots"], (node.name, status)
        assert not node.pilot_states(), node.name
        starts = pilot_starts(node.log()[logs_before[node.number] :])
        assert all(start <= deadline - DRAIN_MIN_RUNTIME + START_LOGGED_SECONDS for start in starts), (
            node.name,
            starts,
        )
    # the pilots left, such as those that replaced the pilots of the jobs that fit, were stopped at it
    assert any("(deadline)" in node.log()[logs_before[node.number] :] for node in farm.nodes)

    # the submitter gives up the held-back jobs (they would take pilots of the farm's next tests)
    pool.run("condor_rm", too_long, user=htcondor_pool.SUBMITTER)

    lifted = time.time()
    farm.commit_config("The farm lends again")
    farm.on_every_node(Node.update)
    wait_until(lambda: every_pilot_listed(farm), SLOTS_SECONDS, "the pool to list every node's pilots again")
    assert all(len(node.running_pilots()) >= PILOTS_PER_NODE for node in farm.nodes)
    FIGURES["drain lifted by a commit to the pool listing every node's pilots again, s"] = round(
        time.time() - lifted, 1
    )
