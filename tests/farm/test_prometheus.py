"""The farm's Prometheus sees every node: each node's metrics_listen, on its farm address,
is scraped and up, and reports the node's build and configuration revision; the number of
series a node costs the site's Prometheus goes to the results file."""

from tests.farm.conftest import FIGURES
from tests.farm.farm import Farm
from tests.farm.support import wait_until


def test_prometheus_scrapes_every_node(farm: Farm) -> None:
    prometheus = farm.prometheus
    assert prometheus is not None
    every_node = {farm.prometheus_target(node) for node in farm.nodes}

    def all_up() -> bool:
        healths = prometheus.target_healths()
        return set(healths) == every_node and set(healths.values()) == {"up"}

    wait_until(all_up, 60, "Prometheus to scrape every node")
    revisions = {series["metric"]["instance"]: series["metric"]["revision"]
                 for series in prometheus.query("plancton_config_info == 1")}  # fmt: skip
    assert set(revisions) == every_node
    # one configuration, from one repository: the same revision on every node
    assert len(set(revisions.values())) == 1, revisions
    builds = prometheus.query("plancton_build_info == 1")
    assert {series["metric"]["instance"] for series in builds} == every_node
    # what each node costs the site's Prometheus: its series, for sizing a farm's
    counts = prometheus.query('count by (instance) ({job="plancton"})')
    assert {series["metric"]["instance"] for series in counts} == every_node
    FIGURES["series scraped per node, at most"] = max(int(series["value"][1]) for series in counts)
