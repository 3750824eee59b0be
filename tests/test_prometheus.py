"""The Prometheus metrics: the mapping of a loop's report to metrics (beside the InfluxDB
points of the same report), the textfile and the endpoint of the reporter; then a real daemon
scraped by a real Prometheus (Debian's), with the dashboard's every query run against it.
"""

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plancton.config.listen_address import ListenAddress
from plancton.config.loader import parse
from plancton.config.schema import Config, HostFacts
from plancton.core.holds import Hold
from plancton.core.policy import HostSample
from plancton.metrics.points import daemon_point, host_point
from plancton.metrics.prometheus import (
    LISTEN_RETRY_SECONDS,
    PrometheusReporter,
    Snapshot,
    SnapshotCollector,
    initial_events,
)
from plancton.metrics.reporting import LoopReport, PilotEvent, Reporters, SenderStats
from tests.conftest import STEADY_POLICY, Installation, wait_until
from tests.support import prometheus_dashboard
from tests.support.influx_server import InfluxServer, free_port, server_fixture
from tests.support.prometheus_dashboard import chosen
from tests.support.prometheus_server import PrometheusServer, running_prometheus

GIB = 1024**3
FACTS = HostFacts(ncpus=4, ram_bytes=16 * GIB, swap_bytes=0)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- the mapping ------------------------------------------------------------------------------


#: Every ``plancton_hold_reason`` label, as docs/metrics.md lists them.
HOLD_LABELS = (
    "mode",
    "deadline",
    "memory",
    "owner_busy",
    "input",
    "battery",
    "run_hours",
    "snooze",
    "grace_spawn",
    "paused_first",
    "start_backoff",
    "start_rate",
    "pool_full",
)


def make_report(**changes: Any) -> LoopReport:
    values: dict[str, Any] = {
        "mode": "active",
        "uptime_seconds": 12.5,
        "pilots_by_state": {"running": 2, "paused": 1, "exited": 1},
        "config_revision": "abc123",
        "sample": HostSample(ncpus=4, busy_cores=3.0, pilots_cores=2.0, available_bytes=GIB, cpu_pressure=1.5),
        "loop_seconds": 0.25,
        "api_calls": 3,
        "engine_available": True,
        "holds": (Hold.POOL_FULL,),
    }
    return LoopReport(**(values | changes))


def scrape(snapshot: Snapshot) -> Samples:
    """Render a snapshot in the text format, parse it back and return every sample's value."""
    collector = SnapshotCollector()
    collector.snapshot = snapshot
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return parse_text(generate_latest(registry).decode())


def parse_text(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels.get("plancton_instance") == "node_a", sample
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "plancton_instance")
            samples[(sample.name, labels)] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_a_failed_configuration_update_is_one_series_by_its_reason() -> None:
    quiet = scrape(Snapshot("node_a", make_report(), {}, (0, 0.0), loops=1, api_calls=0))
    assert {
        value(quiet, "plancton_config_update_failed", reason=r) for r in ("untrusted", "invalid", "unreachable")
    } == {0}
    assert not any(name == "plancton_config_update_timestamp_seconds" for name, _ in quiet)
    report = make_report(config_update_failure="untrusted", config_update_checked_at=1.7e9)
    samples = scrape(Snapshot("node_a", report, {}, (0, 0.0), loops=1, api_calls=0))
    assert value(samples, "plancton_config_update_failed", reason="untrusted") == 1
    assert value(samples, "plancton_config_update_failed", reason="unreachable") == 0
    assert value(samples, "plancton_config_update_timestamp_seconds") == 1.7e9


def test_the_drain_deadline_is_a_series_and_a_field_while_there_is_one() -> None:
    quiet = scrape(Snapshot("node_a", make_report(), {}, (0, 0.0), loops=1, api_calls=0))
    assert not any(name == "plancton_drain_deadline_timestamp_seconds" for name, _ in quiet)
    assert "drain_deadline_seconds" not in daemon_point(make_report(), {}, 1).fields
    report = make_report(drain_by=1796493600.0, holds=(Hold.DEADLINE,))
    samples = scrape(Snapshot("node_a", report, {}, (0, 0.0), loops=1, api_calls=0))
    assert value(samples, "plancton_drain_deadline_timestamp_seconds") == 1796493600.0
    assert value(samples, "plancton_hold_reason", reason="deadline") == 1
    assert daemon_point(report, {}, 1).fields["drain_deadline_seconds"] == 1796493600.0


def test_a_loop_report_gives_the_same_facts_as_the_influxdb_points() -> None:
    report = make_report()
    events = initial_events()
    events.update({("started", ""): 3, ("stopped", "force-stop"): 1, ("exited", ""): 2})
    senders = {"http://127.0.0.1:8086#farm": SenderStats(sent=40, dropped=2, buffered=5)}
    snapshot = Snapshot("node_a", report, dict(events), (2, 90.0), loops=7, api_calls=21, senders=senders)
    samples = scrape(snapshot)
    assert report.sample is not None
    influx = {**daemon_point(report, {}, 1).fields, **host_point(report.sample, {}, 1).fields}

    for state in ("running", "paused", "created", "exited", "spare"):
        assert value(samples, "plancton_pilots", state=state) == influx[f"pilots_{state}"]
    assert value(samples, "plancton_mode", mode="active") == 1
    assert {value(samples, "plancton_mode", mode=m) for m in ("draining", "drain-stop", "force-stop", "stopping")} == {
        0
    }
    assert value(samples, "plancton_uptime_seconds") == influx["uptime_seconds"]
    assert value(samples, "plancton_config_info", revision="abc123") == 1
    assert value(samples, "plancton_loop_duration_seconds") == influx["loop_seconds"]
    assert value(samples, "plancton_engine_up") == 1
    assert value(samples, "plancton_host_cpus") == influx["ncpus"]
    assert value(samples, "plancton_owner_cpu_cores") == influx["owner_cores"]
    assert value(samples, "plancton_pilots_cpu_cores") == influx["pilots_cores"]
    assert value(samples, "plancton_host_busy_cpu_cores") == influx["busy_cores"]
    assert value(samples, "plancton_memory_available_bytes") == influx["available_bytes"]
    assert value(samples, "plancton_cpu_pressure_ratio") == pytest.approx(float(influx["cpu_pressure_percent"]) / 100)
    assert not any(name == "plancton_memory_pressure_ratio" for name, _ in samples)
    assert value(samples, "plancton_hold_reason", reason="pool_full") == 1
    assert value(samples, "plancton_hold_reason", reason="owner_busy") == 0
    # the labels dashboards and alerts name, whatever the policy's sentences say
    held_labels = {dict(labels)["reason"] for name, labels in samples if name == "plancton_hold_reason"}
    assert held_labels == set(HOLD_LABELS)
    assert value(samples, "plancton_build_info", version=snapshot.version) == 1
    assert value(samples, "plancton_loops_total") == 7
    assert value(samples, "plancton_engine_api_calls_total") == 21
    assert value(samples, "plancton_pilots_started_total") == 3
    assert value(samples, "plancton_pilots_exited_total") == 2
    assert value(samples, "plancton_pilots_stopped_total", reason="force-stop") == 1
    assert value(samples, "plancton_pilots_stopped_total", reason="ttl") == 0
    assert value(samples, "plancton_pilots_killed_total", reason="memory") == 0
    assert value(samples, "plancton_pilot_start_failures_total") == 0
    assert (
        value(samples, "plancton_pilot_runtime_seconds_count"),
        value(samples, "plancton_pilot_runtime_seconds_sum"),
    ) == (2, 90)
    target = {"target": "http://127.0.0.1:8086#farm"}
    assert value(samples, "plancton_influxdb_points_sent_total", **target) == 40
    assert value(samples, "plancton_influxdb_points_dropped_total", **target) == 2
    assert value(samples, "plancton_influxdb_points_buffered", **target) == 5


def test_without_a_sample_the_host_metrics_are_left_out_as_the_host_point_is() -> None:
    samples = scrape(Snapshot("node_a", make_report(sample=None, engine_available=False)))
    assert value(samples, "plancton_engine_up") == 0
    assert not any(name.startswith(("plancton_host_", "plancton_owner_", "plancton_memory_")) for name, _ in samples)
    before_any_loop = scrape(Snapshot("node_a"))
    assert {name for name, _ in before_any_loop} >= {"plancton_build_info", "plancton_pilots_started_total"}
    assert not any(name == "plancton_pilots" for name, _ in before_any_loop)


# -- the reporter: textfile and endpoint ------------------------------------------------------


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config_of(**keys: object) -> Config:
    return parse({"instance": "node_a", **keys}, FACTS)[0]


def test_the_textfile_is_replaced_whole_and_follows_the_configuration(tmp_path: Path) -> None:
    first, second = tmp_path / "first.prom", tmp_path / "second.prom"
    clock = Clock()
    reporter = PrometheusReporter(clock=clock)
    reporter.configure(config_of(metrics_textfile=str(first)))
    reporter.pilot_event(PilotEvent("started", "p1"))
    reporter.loop(make_report())
    samples = parse_text(first.read_text())
    assert value(samples, "plancton_pilots", state="running") == 2
    assert value(samples, "plancton_pilots_started_total") == 1
    assert os.listdir(tmp_path) == ["first.prom"]  # the temporary file was renamed over it

    reporter.configure(config_of(metrics_textfile=str(second)))
    clock.now += 5
    reporter.loop(make_report(pilots_by_state={"running": 1}))
    assert os.listdir(tmp_path) == ["second.prom"]  # the old one does not go stale
    reporter.close()
    samples = parse_text(second.read_text())
    assert value(samples, "plancton_mode", mode="stopping") == 1
    assert value(samples, "plancton_pilots", state="running") == 1


def test_an_unwritable_textfile_is_logged_once_and_the_reporter_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    reporter = PrometheusReporter(clock=clock)
    reporter.configure(config_of(metrics_textfile=str(tmp_path / "missing" / "plancton.prom")))
    with caplog.at_level(logging.ERROR, logger="plancton.metrics.prometheus"):
        for _ in range(3):
            clock.now += 5
            reporter.loop(make_report())
    problems = [record.getMessage() for record in caplog.records]
    assert len(problems) == 1, problems
    assert "cannot write it: No such file or directory; check that its folder exists" in problems[0]


def get_metrics(address: ListenAddress) -> str:
    response = requests.get(f"http://{address}/metrics", timeout=10)
    response.raise_for_status()
    return response.text


@pytest.fixture
def taken_port() -> Iterator[socket.socket]:
    """A loopback port that another process's socket listens on."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    yield listener
    listener.close()


def test_a_taken_address_is_logged_and_tried_again_and_the_endpoint_follows_a_reload(
    taken_port: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    port = taken_port.getsockname()[1]
    clock = Clock()
    reporter = PrometheusReporter(clock=clock)
    with caplog.at_level(logging.INFO, logger="plancton.metrics.prometheus"):
        reporter.configure(config_of(metrics_listen=f"127.0.0.1:{port}"))
        reporter.loop(make_report())
        clock.now += LISTEN_RETRY_SECONDS
        reporter.loop(make_report())  # tried again, still taken: not logged again
        assert reporter.endpoint is None
        errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
        assert errors == [
            f"metrics_listen 127.0.0.1:{port}: cannot listen: Address already in use; another process listens "
            "there (ss -ltnp names it): choose another port in metrics_listen. Plancton runs on without the "
            f"endpoint and tries again every {LISTEN_RETRY_SECONDS:.0f} s and when the configuration changes"
        ]
        taken_port.close()
        reporter.loop(make_report())
        assert reporter.endpoint is None  # not yet: tried only every LISTEN_RETRY_SECONDS
        clock.now += LISTEN_RETRY_SECONDS
        reporter.loop(make_report())
        first = ListenAddress("127.0.0.1", port)
        assert 'plancton_pilots{plancton_instance="node_a",state="running"} 2.0' in get_metrics(first)

        second = ListenAddress("127.0.0.1", free_port())
        reporter.configure(config_of(metrics_listen=str(second)))
        assert "plancton_build_info" in get_metrics(second)
        with pytest.raises(requests.ConnectionError):
            get_metrics(first)
        reporter.close()
        with pytest.raises(requests.ConnectionError):
            get_metrics(second)
    assert f"Prometheus metrics at http://127.0.0.1:{port}/metrics" in caplog.text


def test_one_failing_reporter_does_not_keep_the_report_from_the_others() -> None:
    class Failing:
        def configure(self, config: Config) -> None:
            raise RuntimeError("broken")

        def loop(self, report: LoopReport) -> None:
            raise RuntimeError("broken")

        def pilot_event(self, event: PilotEvent) -> None:
            raise RuntimeError("broken")

        def close(self) -> None:
            raise RuntimeError("broken")

    counting = PrometheusReporter()
    reporters = Reporters(Failing(), counting)
    reporters.configure(config_of())
    reporters.pilot_event(PilotEvent("started", "p1"))
    reporters.close()
    assert counting._events[("started", "")] == 1


# -- a real daemon, scraped by a real Prometheus ------------------------------------------------

influxd = server_fixture()
#: The panels a farm's user looks for first: its totals, a row per node, what holds each node.
REQUIRED_PANELS = {
    "Farm totals",
    "Daemons",
    "Holds per node",
    "Pilots per host",
    "Owner vs pilot CPU",
    "Available memory",
    "Why pilots are held",
}


def test_the_dashboard_has_the_panels_and_promql_targets() -> None:
    dashboard = prometheus_dashboard.load()
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert set(titles) >= REQUIRED_PANELS
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
    assert [variable["name"] for variable in dashboard["templating"]["list"]] == ["instance", "plancton_instance"]


def running_in_status(installation: Installation) -> int:
    return sum(1 for pilot in installation.status()["pilots"] if pilot["state"] == "running")


def wait_for_value(prometheus: PrometheusServer, expression: str, wanted: Any, what: str) -> float:
    def matches() -> float | None:
        found = prometheus.value(expression)
        return found if found is not None and wanted(found) else None

    return float(wait_until(matches, 60, what))  # type: ignore[arg-type]


def textfile_running(textfile: Path) -> float | None:
    """Return the running pilots that a metrics text file counts, or None before it does."""
    families = {family.name: family for family in text_string_to_metric_families(textfile.read_text())}
    pilots = families.get("plancton_pilots")
    samples = [sample.value for sample in pilots.samples if sample.labels.get("state") == "running"] if pilots else []
    return samples[0] if samples else None


@pytest.mark.docker
@pytest.mark.influxdb
def test_prometheus_sees_what_status_shows_and_counts_a_refill(
    installation: Installation, influxd: InfluxServer, docker_api: docker.APIClient, tmp_path: Path
) -> None:
    port, textfile = free_port(), tmp_path / "textfile" / "plancton.prom"
    textfile.parent.mkdir()
    database = f"prom_{installation.instance}"
    base = STEADY_POLICY + "max_docks: 2\ndocker_cmd: sleep 600\nvacate_time: 1\n"
    base += f"influxdb_url: {json.dumps(influxd.url(database))}\nmetrics_textfile: {textfile}\n"
    installation.write_config(base + f"metrics_listen: 127.0.0.1:{port}\n")
    started = installation.ctl("start")
    assert started.returncode == 0, started.stderr
    ours = f'plancton_instance="{installation.instance}"'
    running = f'plancton_pilots{{{ours}, state="running"}}'

    with running_prometheus(f"127.0.0.1:{port}") as prometheus:
        wait_until(lambda: running_in_status(installation) == 2, 60, "two running pilots")
        wait_for_value(prometheus, running, lambda found: found == 2, "Prometheus to see two running pilots")
        assert prometheus.value(running) == running_in_status(installation) == 2
        assert prometheus.target_health() == "up"
        assert f"Prometheus metrics at http://127.0.0.1:{port}/metrics" in installation.log()

        # a pilot dies: the daemon removes it and starts another, and the counters say so
        starts = prometheus.value(f"plancton_pilots_started_total{{{ours}}}")
        assert starts is not None and starts >= 2
        victim = installation.status()["pilots"][0]["id"]
        docker_api.kill(victim)
        wait_for_value(prometheus, f"plancton_pilots_started_total{{{ours}}}", lambda n: n > starts, "a new start")
        wait_for_value(prometheus, f"plancton_pilots_exited_total{{{ours}}}", lambda n: n >= 1, "the exit counted")
        wait_until(lambda: running_in_status(installation) == 2, 60, "the pool refilled")
        wait_for_value(prometheus, running, lambda found: found == 2, "Prometheus to see the pool refilled")
        assert victim not in {pilot["id"] for pilot in installation.status()["pilots"]}

        # InfluxDB got the same loops: its last count of running pilots agrees
        influx_running = influxd.series('SELECT last("pilots_running") FROM "plancton_daemon"', database)
        assert influx_running and influx_running[0]["values"][0][1] == 2
        backlog = f'plancton_influxdb_points_buffered{{{ours}, target="{influxd.url(database)}"}}'
        assert prometheus.value(backlog) is not None

        dashboard = prometheus_dashboard.load()
        target = f"127.0.0.1:{port}"
        variables = {"instance": chosen(target), "plancton_instance": chosen(installation.instance)}
        for query in prometheus_dashboard.queries(dashboard):
            rendered = prometheus_dashboard.render(query.expr, variables)
            assert prometheus.query(rendered), f"{query.where}: no series for {rendered}"
        offered = prometheus_dashboard.variable_queries(dashboard, variables)
        for name, value in (("instance", target), ("plancton_instance", installation.instance)):
            expression, label = offered[name]
            assert [series["metric"][label] for series in prometheus.query(expression)] == [value], name

    # the text file, written in its own turn, comes to say the same
    wait_until(lambda: textfile_running(textfile) == 2, 60, "the text file showing two running pilots")
    assert os.listdir(textfile.parent) == ["plancton.prom"]

    # a reload moves the endpoint; to a taken address, it is logged and the daemon runs on
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        moved = taken.getsockname()[1]
        installation.write_config(base + f"metrics_listen: 127.0.0.1:{moved}\n")
        assert installation.ctl("reload").returncode == 0
        problem = f"metrics_listen 127.0.0.1:{moved}: cannot listen: Address already in use"
        wait_until(lambda: problem in installation.log(), 60, "the taken address logged")
        assert not answers(port)
        assert installation.status()["running"]
    # freed, it is tried again at the next change of the configuration
    installation.write_config(base + f"metrics_listen: 127.0.0.1:{moved}\nupdateconfig: 30\n")
    assert installation.ctl("reload").returncode == 0
    wait_until(lambda: answers(moved), 60, "the endpoint at its new port")
    # no pilot left when the daemon stops, so that it removes the pilots' cgroup itself
    assert installation.ctl("force-stop").returncode == 0
    wait_until(lambda: not installation.status()["pilots"], 60, "every pilot stopped")
    assert installation.ctl("stop").returncode == 0
    assert not answers(moved)
    assert 'plancton_mode{mode="stopping",plancton_instance=' in textfile.read_text()


def answers(port: int) -> bool:
    """Whether Plancton's endpoint answers on this loopback port."""
    try:
        return "plancton_build_info" in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.ConnectionError:
        return False
