"""The Grafana dashboard, run against a real InfluxDB that a real Plancton run filled:
pilots that exit on their own, then a force-stop. Every panel's and variable's query must
return series once Grafana's macros and variables are put in."""

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import STEADY_POLICY, Installation, wait_until
from tests.support.influx_server import InfluxServer, server_fixture

pytestmark = [pytest.mark.influxdb, pytest.mark.docker]

DASHBOARD = Path(__file__).resolve().parent.parent / "etc" / "grafana" / "plancton-dashboard.json"
REQUIRED_PANELS = {
    "Pilots per host",
    "Owner vs pilot CPU",
    "Available memory",
    "Pilot exits, stops and kills by reason",
    "Loop time",
}
#: How Grafana renders its macros for a query over the last hour.
MACROS = {"$timeFilter": "time > now() - 1h", "$__interval": "5s"}

influxd = server_fixture()


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (where, query) for every panel target and every query variable."""
    found = [(panel["title"], target["query"]) for panel in dashboard["panels"] for target in panel["targets"]]
    found += [(f"variable {v['name']}", v["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def render(query: str, variables: dict[str, str]) -> str:
    """Put in Grafana's macros, and each variable as Grafana writes a chosen value in a regex."""
    for name, value in MACROS.items():
        query = query.replace(name, value)
    for name, value in variables.items():
        query = query.replace(f"${name}", f"({re.escape(value)})")
    return query


def test_dashboard_has_the_panels_and_influxql_targets() -> None:
    dashboard = load_dashboard()
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert set(titles) >= REQUIRED_PANELS
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["type"] == "influxdb"
        assert panel["targets"], panel["title"]
        assert all(target["rawQuery"] and target["query"] for target in panel["targets"]), panel["title"]
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"host", "instance"}


def event_series(server: InfluxServer, database: str, condition: str) -> list[dict[str, Any]]:
    query = f'SELECT sum("count") FROM "plancton_pilot_event" WHERE {condition} GROUP BY "kind", "reason"'
    return server.series(query, database)


def young_running_pilot(installation: Installation) -> bool:
    """Whether a pilot runs that has seconds left to live (sleep 4), so force-stop finds one."""
    pilots = installation.state().pilots
    return any(pilot.state == "running" and time.time() - pilot.created < 1.5 for pilot in pilots)


def test_every_query_returns_series_after_a_real_run(installation: Installation, influxd: InfluxServer) -> None:
    database = f"dash_{installation.instance}"  # missing: Plancton creates it
    installation.write_config(
        STEADY_POLICY
        + "max_docks: 2\ndocker_cmd: sleep 4\nvacate_time: 1\n"
        + f"influxdb_url: {json.dumps([influxd.url(database)])}\n"
    )
    started = installation.ctl("start")
    assert started.returncode == 0, started.stderr
    wait_until(lambda: event_series(influxd, database, "\"kind\" = 'exited'"), 90, "pilots that exited")
    wait_until(lambda: young_running_pilot(installation), 60, "a pilot that has just started")
    assert installation.ctl("force-stop").returncode == 0
    wait_until(lambda: event_series(influxd, database, "\"reason\" = 'force-stop'"), 60, "pilots stopped by force-stop")
    assert installation.ctl("stop").returncode == 0

    variables = {"host": socket.gethostname(), "instance": installation.instance}
    for where, query in dashboard_queries(load_dashboard()):
        rendered = render(query, variables)
        assert not re.search(r"\$\w", rendered), f"{where}: a variable Grafana would fill is left in {rendered}"
        assert influxd.series(rendered, database), f"{where}: no series for {rendered}"
    exits_panel = next(q for where, q in dashboard_queries(load_dashboard()) if where.startswith("Pilot exits"))
    groups = {
        (s["tags"]["kind"], s["tags"]["reason"]) for s in influxd.series(render(exits_panel, variables), database)
    }
    assert {("exited", ""), ("stopped", "force-stop")} <= groups
