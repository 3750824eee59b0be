"""The site's configuration repository steers the farm: a commit with a new ``max_docks``
reaches every node through the update entry that plancton-bootstrap installed on it (run as
cron runs it), and every node then runs that many pilots, which the pool lists."""

import time

from tests.farm.conftest import FIGURES
from tests.farm.farm import Farm
from tests.farm.node import Node
from tests.farm.support import wait_until
from tests.farm.test_htcondor import PILOTS_PER_NODE, SLOTS_SECONDS

NEW_MAX_DOCKS = PILOTS_PER_NODE + 1
#: A bound on the update entries, which each wait a random time up to the update interval first.
UPDATE_SECONDS = 300


def revisions_seen_by_prometheus(farm: Farm) -> dict[str, str]:
    """Return the configuration revision of each node as the farm's Prometheus last scraped it."""
    assert farm.prometheus is not None
    return {
        series["metric"]["instance"]: series["metric"]["revision"]
        for series in farm.prometheus.query("plancton_config_info == 1")
    }


def test_a_new_max_docks_committed_to_the_repository_reaches_every_node_which_then_runs_that_many_pilots(
    farm: Farm, site_policy_restored: None
) -> None:
    pool = farm.pool
    assert pool is not None
    before = {node.number: node.status()["config_revision"] for node in farm.nodes}
    assert len(set(before.values())) == 1, before

    commit = farm.commit_config(f"{NEW_MAX_DOCKS} pilots on every node", max_docks=NEW_MAX_DOCKS)
    committed = time.time()
    for node, done in zip(farm.nodes, farm.on_every_node(Node.run_update_entry), strict=True):
        assert done.returncode == 0, (node.name, done.stdout, done.stderr)
        assert f"updated to commit {commit[:12]}" in done.stdout, (node.name, done.stdout)

    def new_revision_everywhere() -> dict[int, dict[str, object]]:
        statuses = {node.number: node.status() for node in farm.nodes}
        changed = all(status["config_revision"] not in (None, before[number]) for number, status in statuses.items())
        return statuses if changed else {}

    statuses = wait_until(new_revision_everywhere, 60, "every node's daemon to reload the new revision")
    for number, status in statuses.items():
        update = status["config_update"]
        assert isinstance(update, dict), (number, status)
        assert update["outcome"] == "updated" and update["commit"] == commit, (number, update)
    assert len({status["config_revision"] for status in statuses.values()}) == 1, statuses

    def every_node_full() -> bool:
        return all(len(node.running_pilots()) == NEW_MAX_DOCKS for node in farm.nodes)

    wait_until(every_node_full, SLOTS_SECONDS, f"every node to run {NEW_MAX_DOCKS} pilots")
    FIGURES[f"commit to every node running {NEW_MAX_DOCKS} pilots, s"] = round(time.time() - committed, 1)
    for node in farm.nodes:
        config = node.ctl("config").stdout
        assert f"max_docks resolves to {NEW_MAX_DOCKS} on this host" in config, (node.name, config)
    # what the site sees from its two places: the pool lists every new pilot, and
    # Prometheus the new revision on every node
    slots = NEW_MAX_DOCKS * len(farm.nodes)
    wait_until(lambda: len(pool.pilot_slots()) >= slots, SLOTS_SECONDS, f"the pool to list {slots} pilots")
    new_revision = str(statuses[farm.nodes[0].number]["config_revision"])
    every_node = {farm.prometheus_target(node) for node in farm.nodes}
    wait_until(
        lambda: revisions_seen_by_prometheus(farm) == dict.fromkeys(every_node, new_revision),
        60,
        "Prometheus to see the new revision on every node",
    )
