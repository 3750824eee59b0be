"""The alert rules Plancton ships (etc/prometheus/plancton-rules.yml), evaluated by the farm's
Prometheus, fire for their fault on the node that has it and on no other, and clear once the
fault is gone: a node whose daemon is stopped is absent; a commit naming an image that no
engine has is rolled back by the first node of its staged rollout, which the alert names.

The farm's Prometheus loads the shipped file changed only in its ``for:`` durations, each set
to ``FARM_ALERT_FOR`` (tests/farm/watch.py): with the shipped ones (5 minutes for both rules
here) each test would wait that long. The times from each fault to its alert firing, and from
its end to the alert clearing, go to the results file.
"""

import time
from collections.abc import Iterator

import pytest

from plancton.core.rollout import rollout_offset
from tests.farm.conftest import FIGURES
from tests.farm.farm import Farm, UpdateRounds
from tests.farm.node import Node
from tests.farm.support import wait_until
from tests.farm.watch import FARM_ALERT_FOR, FarmPrometheus

#: An image that no engine of the farm has (and none can pull: pull_policy is never).
MISSING_IMAGE = "plancton-htcondor:missing"
MISSING_IMAGE_OVERLAY = "missing-image"
MENDED = "The nodes keep the site's image"
#: A bound on an alert's firing or clearing, well past its "for:" and a scrape.
ALERT_SECONDS = 120
#: The rollout window of the commit naming a missing image: with the farm's host names, its
#: second node's turn comes at least MEND_SECONDS after its first node's.
ROLLBACK_WINDOW_SECONDS = 90
MEND_SECONDS = 30
#: How long before the second node's turn the first node must have gone back and been alerted on.
TURN_SLACK_SECONDS = 5


def wait_for_alert(
    prometheus: FarmPrometheus, name: str, instances: set[str], since: float, figure: str, bound: float = ALERT_SECONDS
) -> None:
    """Wait until the alert ``name`` fires for exactly these instances (none: until it is
    neither firing nor pending for any), and record the seconds since ``since`` as ``figure``."""
    state = "firing" if instances else None
    what = f"{name} to fire for {sorted(instances)}" if instances else f"{name} to clear"
    wait_until(lambda: prometheus.alerting(name, state) == instances, bound, what)
    FIGURES[figure] = round(time.time() - since, 1)


def mend(farm: Farm) -> None:
    """Remove the overlay that gives the nodes a missing image, and have every node take that commit."""
    farm.commit_overlay(MISSING_IMAGE_OVERLAY, None, MENDED)
    farm.on_every_node(Node.update)


def test_a_node_whose_daemon_is_stopped_is_alerted_as_absent_until_it_runs_again(farm: Farm) -> None:
    prometheus = farm.prometheus
    assert prometheus is not None
    node = farm.nodes[0]
    assert not prometheus.alerting("PlanctonNodeAbsent", None)

    stopped = time.time()
    done = node.ctl("stop")
    assert done.returncode == 0, done.stderr
    try:
        wait_for_alert(
            prometheus, "PlanctonNodeAbsent", {farm.prometheus_target(node)}, stopped,
            f"alert PlanctonNodeAbsent (for: {FARM_ALERT_FOR}): daemon stopped to firing, s",
        )  # fmt: skip
    finally:
        node.start_daemon()
    started = time.time()
    figure = "alert PlanctonNodeAbsent: daemon started to cleared, s"
    wait_for_alert(prometheus, "PlanctonNodeAbsent", set(), started, figure)


@pytest.fixture
def missing_image_overlay(farm: Farm) -> Iterator[None]:
    """Remove the overlay that gives the nodes a missing image afterwards, if it is still in
    the repository, and have every node take that commit."""
    yield
    if farm.has_overlay(MISSING_IMAGE_OVERLAY):
        mend(farm)


def test_a_missing_image_is_rolled_back_by_the_first_node_of_its_rollout_and_alerted_and_the_others_never_take_it(
    farm: Farm, missing_image_overlay: None
) -> None:
    """A signed commit gives every node (an overlay selecting them by host name) an image they
    cannot have, and one pilot more, over a rollout window. The first node whose turn comes
    takes it, sees that no pilot can be made under it where its pilots ran under the commit
    before, goes back to that commit by itself and never takes it again, and
    PlanctonConfigRolledBack names that node. The site then pushes a commit that removes the
    overlay before the next node's turn: every node takes that one, and no other node ever took
    the bad commit or tried its image. (The image's own alert, PlanctonImageUnavailable, has
    no time to fire: the node went back before its ``for:``; promtool's cases in the ordinary
    tier cover that rule.)"""
    prometheus = farm.prometheus
    assert prometheus is not None and len(farm.nodes) >= 2, "this test needs two nodes or more"
    assert not prometheus.alerting("PlanctonConfigRolledBack", None)
    offsets = {node.number: rollout_offset(node.host_name, ROLLBACK_WINDOW_SECONDS) for node in farm.nodes}
    first, second, *_ = sorted(farm.nodes, key=lambda node: offsets[node.number])
    others = [node for node in farm.nodes if node is not first]
    # the farm's host names leave the site the time to see the alert and mend before the second turn
    assert offsets[second.number] - offsets[first.number] >= MEND_SECONDS, offsets
    logs_before = {node.number: len(node.log()) for node in farm.nodes}
    previous = first.checkout_head()

    overlay = {
        "match": {"hosts": ["ws-*"]},
        "docker_image": MISSING_IMAGE,
        "max_docks": farm.one_pilot_more(),
        "rollout": {"window": f"{ROLLBACK_WINDOW_SECONDS}s"},
    }
    bad = farm.commit_overlay(MISSING_IMAGE_OVERLAY, overlay, "A trial image on every node, and a pilot more")
    rounds = UpdateRounds(farm)

    def rolled_back_and_alerted() -> bool:
        assert not set(rounds.took(bad)) - {first.number}, rounds.taken  # nobody else's turn yet
        return prometheus.alerting("PlanctonConfigRolledBack") == {farm.prometheus_target(first)}

    bound = offsets[second.number] - TURN_SLACK_SECONDS
    rounds.until(rolled_back_and_alerted, bound, f"{first.name} to take the commit, go back and be alerted")
    FIGURES[f"rollout over {ROLLBACK_WINDOW_SECONDS} s of a missing image: its first node taking it, s"] = round(
        rounds.took(bad)[first.number], 1
    )
    FIGURES["alert PlanctonConfigRolledBack: commit to firing for the first node, s"] = round(
        time.time() - rounds.begun, 1
    )
    assert first.checkout_head() == previous
    assert first.status()["config_update"]["outcome"] == "rolled_back"
    log = first.log()[logs_before[first.number] :]
    assert f"image {MISSING_IMAGE} is not available" in log, log[-3000:]
    assert f"(commit {bad[:12]}): pilots cannot start" in log, log[-3000:]
    assert f"going back to commit {previous[:12]}" in log, log[-3000:]

    mended = time.time()
    fixed = farm.commit_overlay(MISSING_IMAGE_OVERLAY, None, MENDED)
    rounds.until(lambda: len(rounds.took(fixed)) == len(farm.nodes), 60, "every node to take the fixed commit")
    wait_for_alert(
        prometheus,
        "PlanctonConfigRolledBack",
        set(),
        mended,
        "alert PlanctonConfigRolledBack: fixed commit to cleared, s",
    )
    # no other node ever took the bad commit, or tried its image
    assert set(rounds.took(bad)) == {first.number}, rounds.taken
    for node in others:
        assert node.checkout_head() == fixed
        assert not any(f"updated to commit {bad[:12]}" in said for said in rounds.said[node.number])
        assert bad[:12] not in node.log()[logs_before[node.number] :], node.name
        assert MISSING_IMAGE not in node.log()[logs_before[node.number] :], node.name
    assert all(node.running_pilots() for node in farm.nodes)
