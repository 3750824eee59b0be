"""The alert rules Plancton ships (etc/prometheus/plancton-rules.yml), evaluated by the farm's
Prometheus, fire for their fault on the node that has it and on no other, and clear once the
fault is gone: a node whose daemon is stopped is absent; a node whose configuration names an
image its engine does not have starts no pilot.

The farm's Prometheus loads the shipped file changed only in its ``for:`` durations, each set
to ``FARM_ALERT_FOR`` (tests/farm/watch.py): with the shipped ones (5 minutes for both rules
here) each test would wait that long. The times from each fault to its alert firing, and from
its end to the alert clearing, go to the results file.
"""

import time
from collections.abc import Iterator

import pytest

from tests.farm.conftest import FIGURES
from tests.farm.farm import PILOT_IDLE_SECONDS, Farm
from tests.farm.node import Node
from tests.farm.support import wait_until
from tests.farm.test_htcondor import PILOTS_PER_NODE, SLOTS_SECONDS
from tests.farm.watch import FARM_ALERT_FOR, FarmPrometheus

#: An image that no engine of the farm has (and none can pull: pull_policy is never).
MISSING_IMAGE = "plancton-htcondor:missing"
MISSING_IMAGE_OVERLAY = "missing-image"
#: A bound on an alert's firing or clearing, well past its "for:" and a scrape.
ALERT_SECONDS = 120


def wait_for_alert(
    prometheus: FarmPrometheus, name: str, instances: set[str], since: float, figure: str, bound: float = ALERT_SECONDS
) -> None:
    """Wait until the alert ``name`` fires for exactly these instances (none: until it is
    neither firing nor pending for any), and record the seconds since ``since`` as ``figure``."""
    state = "firing" if instances else None
    what = f"{name} to fire for {sorted(instances)}" if instances else f"{name} to clear"
    wait_until(lambda: prometheus.alerting(name, state) == instances, bound, what)
    FIGURES[figure] = round(time.time() - since, 1)


def mend(farm: Farm, node: Node) -> None:
    """Remove the overlay that gives ``node`` a missing image, and have every node take that commit."""
    farm.commit_overlay(MISSING_IMAGE_OVERLAY, None, f"{node.label} takes the site's image again")
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
def missing_image_overlay(farm: Farm) -> Iterator[Node]:
    """The node that an overlay of the repository gives a missing image; the overlay is
    removed afterwards, and every node takes that commit."""
    node = farm.nodes[-1]
    yield node
    if farm.has_overlay(MISSING_IMAGE_OVERLAY):
        mend(farm, node)


def test_a_node_whose_configuration_names_a_missing_image_goes_back_and_is_alerted_until_the_repository_mends_it(
    farm: Farm, missing_image_overlay: Node
) -> None:
    """A commit gives one node an image it cannot have: that node's daemon sees that no pilot
    can be made under it where its pilots ran under the commit before, goes back to that
    commit by itself, and PlanctonConfigRolledBack names the node until a newer commit comes
    (the image's own alert, PlanctonImageUnavailable, has no time to fire: the node went back
    before its ``for:``; promtool's cases in the ordinary tier cover that rule)."""
    prometheus = farm.prometheus
    assert prometheus is not None
    node = missing_image_overlay
    target = farm.prometheus_target(node)
    assert not prometheus.alerting("PlanctonConfigRolledBack", None)

    log_before = len(node.log())
    overlay = {"match": {"labels": [node.label]}, "docker_image": MISSING_IMAGE}
    committed = time.time()
    commit = farm.commit_overlay(MISSING_IMAGE_OVERLAY, overlay, f"{node.label} tries an image it does not have")
    for each, output in zip(farm.nodes, farm.on_every_node(Node.update), strict=True):
        assert f"updated to commit {commit[:12]}" in output, (each.name, output)
    wait_for_alert(
        prometheus, "PlanctonConfigRolledBack", {target}, committed,
        "alert PlanctonConfigRolledBack: commit to firing, s",
        bound=PILOT_IDLE_SECONDS + ALERT_SECONDS,
    )  # fmt: skip
    log = node.log()[log_before:]
    assert f"image {MISSING_IMAGE} is not available" in log, log[-3000:]
    assert f"(commit {commit[:12]}): pilots cannot start" in log, log[-3000:]
    assert "going back to commit" in log, log[-3000:]
    assert all(other.running_pilots() for other in farm.nodes if other is not node)

    mended = time.time()
    mend(farm, node)
    wait_for_alert(
        prometheus, "PlanctonConfigRolledBack", set(), mended, "alert PlanctonConfigRolledBack: mend to cleared, s"
    )
    wait_until(
        lambda: len(node.running_pilots()) == PILOTS_PER_NODE,
        SLOTS_SECONDS + PILOT_IDLE_SECONDS,
        f"{node.name} to run its pilots again",
    )
