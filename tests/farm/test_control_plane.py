"""The configuration repository as the farm's control plane: every commit is signed with the
site's ssh key, and every node was bootstrapped with ``--trust`` and the file of that key.

- A signed commit with a new pilot image and ``rollout: {window: ...}`` reaches the nodes in
  stages: each node takes it at its offset into the window, which a hash of its host name sets
  (:func:`plancton.core.rollout.rollout_offset`), and only then runs pilots of that image. An
  unsigned commit pushed on top is refused by every node, which keeps its configuration.

The nodes' updates run in rounds a few seconds apart, as each node's timer would
(:class:`tests.farm.farm.UpdateRounds`). The rollback of a commit whose pilots cannot start is
in test_alerts.py, with the alert that names the node.
"""

import time
from collections.abc import Iterator

import pytest

from plancton.core.rollout import rollout_offset
from tests.farm.conftest import FIGURES
from tests.farm.farm import PILOT_IMAGE, Farm, UpdateRounds
from tests.farm.node import Node
from tests.farm.support import wait_until
from tests.farm.test_htcondor import (
    SLOTS_SECONDS,
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
UNTRUSTED = 'plancton_config_update_failed{reason="untrusted"} == 1'


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
