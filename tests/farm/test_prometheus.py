"""The farm's Prometheus sees every node: each node's metrics_listen, on its farm address,
is scraped and up, and reports the node's build and configuration revision; the number of
series a node costs the site's Prometheus goes to the results file. The shipped dashboard's
every query, run against it for all the nodes, shows each node, or the farm's total."""

from typing import Any

from tests.farm.conftest import FIGURES
from tests.farm.farm import Farm
from tests.farm.support import prometheus_dashboard, wait_until
from tests.farm.watch import FarmPrometheus

#: The dashboard's panels that are, by design, not one series per node, and why: they sum
#: or merge the selected nodes, so their series carry no ``instance``.
FARM_TOTALS = {
    "Farm totals": "the selected nodes together: how many report, their pilots, their pilots' CPU",
    "Pilots by state": "the selected nodes' pilots, summed by state",
    "Pilot starts, exits, stops and kills by reason": "the selected nodes' events, summed by reason",
    "Why pilots are held": "whether any selected node is held, by reason (Holds per node has each node's)",
}
#: The dashboard's per-node panels that the farm leaves empty by design, and why.
EMPTY_IN_THE_FARM = {
    "Metrics delivery to InfluxDB": "the farm's nodes write to no InfluxDB (the site's configuration names none)",
}


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


def instances(series: list[dict[str, Any]]) -> set[str]:
    """Return the ``instance`` labels of a query's series (the nodes they are of)."""
    return {found["metric"]["instance"] for found in series if "instance" in found["metric"]}


def scraped_twice(prometheus: FarmPrometheus) -> set[str]:
    """Return the nodes scraped at least twice in the last minute: a rate over the
    dashboard's $__rate_interval needs two samples of each."""
    return instances(prometheus.query("count_over_time(plancton_build_info[1m]) >= 2"))


def test_the_dashboard_shows_every_node_and_the_farm_totals(farm: Farm) -> None:
    prometheus = farm.prometheus
    assert prometheus is not None
    every_node = {farm.prometheus_target(node) for node in farm.nodes}
    wait_until(lambda: scraped_twice(prometheus) == every_node, 60, "Prometheus to scrape every node twice")
    dashboard = prometheus_dashboard.load()
    queries = prometheus_dashboard.queries(dashboard)
    panels = {query.panel for query in queries}
    assert set(FARM_TOTALS) | set(EMPTY_IN_THE_FARM) < panels, "a panel named here is no longer on the dashboard"

    # the variables offer every node
    chosen = prometheus_dashboard.chosen
    every_node_chosen = {"instance": chosen(*sorted(every_node)), "plancton_instance": chosen(farm.layout.instance)}
    expression, label = prometheus_dashboard.variable_queries(dashboard, every_node_chosen)["instance"]
    assert {series["metric"][label] for series in prometheus.query(expression)} == every_node

    # all the nodes, as "All" writes them and as each node chosen
    for variables in (prometheus_dashboard.all_chosen(dashboard), every_node_chosen):
        for query in queries:
            rendered = prometheus_dashboard.render(query.expr, variables)
            series = prometheus.query(rendered)
            if query.panel in EMPTY_IN_THE_FARM:
                assert not series, f"{query.where}: series for {rendered}, from a farm without InfluxDB"
            elif query.panel in FARM_TOTALS:
                assert series, f"{query.where}: no series for {rendered}"
                assert not instances(series), f"{query.where}: per node, not the farm's total: {rendered}"
            else:
                assert instances(series) == every_node, f"{query.where}: not every node in {rendered}"
        nodes = next(query for query in queries if query.panel == "Farm totals" and query.ref == "A")
        assert prometheus.value(prometheus_dashboard.render(nodes.expr, variables)) == len(farm.nodes)
