"""Metrics against real InfluxDB servers (influxd 1.6): one with authentication and a
write-only user, one over TLS with a self-signed certificate (insecure_https), one stopped and
started again, and a server that never answers; the last test drives the daemon itself."""

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from plancton.config import loader, schema
from plancton.control.ledger import Day
from plancton.core.policy import HostSample
from plancton.metrics.influx_reporter import InfluxReporter
from plancton.metrics.influx_sender import SenderSettings
from plancton.metrics.reporting import LoopReport, PilotEvent
from tests.conftest import STEADY_POLICY, Installation, wait_until
from tests.support.influx_server import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    WRITER_DATABASE,
    WRITER_PASSWORD,
    WRITER_USER,
    InfluxServer,
    SilentServer,
    remove,
    server_fixture,
    start_influxd,
)

# the test servers' certificates are self-signed on purpose
pytestmark = [pytest.mark.influxdb, pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]

SCHEMA_DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
FACTS = schema.HostFacts(ncpus=2, ram_bytes=4 * 2**30, swap_bytes=0)
#: A host name with every character that line protocol must escape in a tag.
AWKWARD_HOST = 'node 1,rack=2"x'
#: Retry quickly, so that a test sees many attempts in a few seconds.
QUICK_RETRIES = SenderSettings(retry_max_seconds=0.2)
EVENTS = (
    PilotEvent("started", "p-1"),
    PilotEvent("paused", "p-1"),
    PilotEvent("resumed", "p-1"),
    PilotEvent("killed", "p-1", reason="owner reclaim"),
    PilotEvent("stopped", "p-2", reason="force-stop"),
    PilotEvent("exited", "p-1", exit_code=137, runtime_seconds=42.5),
    PilotEvent("start_failed", "", reason="no such image"),
)

tls_influxd = server_fixture(tls=True)
auth_influxd = server_fixture(auth=True)


def unique_instance() -> str:
    return f"m{secrets.token_hex(4)}"


#: A drain deadline in force at the second loop (2026-12-05T18:00:00Z).
DRAIN_BY = 1796493600.0


def config_for(instance: str, urls: list[str]) -> schema.Config:
    config, _ = loader.parse({"instance": instance, "influxdb_url": urls}, FACTS)
    return config


def loop_report(uptime: float, sampled: bool = True, drain_by: float | None = None) -> LoopReport:
    sample = HostSample(
        ncpus=2, busy_cores=1.5, pilots_cores=1.0, available_bytes=3 * 2**30, cpu_pressure=2.0, memory_pressure=0.0
    )
    return LoopReport(
        mode="active",
        uptime_seconds=uptime,
        pilots_by_state={"running": 1, "exited": 1},
        config_revision="r1",
        sample=sample if sampled else None,
        loop_seconds=0.01,
        api_calls=1,
        engine_available=True,
        drain_by=drain_by,
    )


def documented_schema() -> dict[str, dict[str, str]]:
    """Return docs/metrics.md's schema: each measurement's fields and their types."""
    schema: dict[str, dict[str, str]] = {}
    measurement = None
    for line in SCHEMA_DOC.read_text(encoding="utf-8").splitlines():
        heading = re.fullmatch(r"#### (plancton_\w+)", line)
        row = re.match(r"\| `([\w<>]+)` \| (\w+) \|", line)
        if heading:
            measurement = heading[1]
            schema[measurement] = {}
        elif line.startswith("#"):
            measurement = None  # a section that is not a measurement's
        elif row and measurement:
            schema[measurement][row[1]] = row[2]
    return schema


def field_types(server: InfluxServer, measurement: str, database: str) -> dict[str, str]:
    """Return the fields of a measurement in a database with their InfluxDB types."""
    found = server.series(f'SHOW FIELD KEYS FROM "{measurement}"', database)
    return {key: kind for serie in found for key, kind in serie["values"]}


def points_of(server: InfluxServer, measurement: str, database: str, instance: str) -> list[dict[str, object]]:
    return server.rows(measurement, database, f"\"instance\" = '{instance}'")


def uptimes(server: InfluxServer, database: str, instance: str) -> list[object]:
    return [row["uptime_seconds"] for row in points_of(server, "plancton_daemon", database, instance)]


def wait_for_uptimes(server: InfluxServer, database: str, instance: str, check: Callable[[list[object]], bool]) -> None:
    """Wait until the uptimes of the daemon's points in a database pass a check."""
    wait_until(lambda: check(uptimes(server, database, instance)), 30, f"the daemon's points in {database}")


def test_points_arrive_with_the_documented_fields(
    tls_influxd: InfluxServer, auth_influxd: InfluxServer, caplog: pytest.LogCaptureFixture
) -> None:
    instance = unique_instance()
    fresh = f"fresh_{instance}"  # missing: the reporter creates it (no auth on this server)
    targets = [(tls_influxd, fresh), (auth_influxd, WRITER_DATABASE)]
    urls = [tls_influxd.url(fresh), auth_influxd.url(WRITER_DATABASE, WRITER_USER, WRITER_PASSWORD)]
    lent = Day(cpu_seconds=12.5, started=3, ended={"finished": 2}, given_way_seconds={"keyboard": 30.0})
    reporter = InfluxReporter(host_name=AWKWARD_HOST, ledger=lambda: lent)
    with caplog.at_level(logging.INFO, logger="plancton"):
        reporter.configure(config_for(instance, urls))
        reporter.loop(loop_report(1.0))
        for event in EVENTS:
            reporter.pilot_event(event)
        reporter.loop(loop_report(2.0, drain_by=DRAIN_BY))
        reporter.close()

    schema = documented_schema()
    assert set(schema) == {
        "plancton_daemon",
        "plancton_host",
        "plancton_pilot_event",
        "plancton_sender",
        "plancton_ledger",
    }
    for server, database in targets:
        wait_for_uptimes(server, database, instance, lambda found: len(found) == 3)
        for measurement, documented in schema.items():
            received = field_types(server, measurement, database)
            expected = {name: kind for name, kind in documented.items() if "<" not in name}
            assert {name: received.get(name) for name in expected} == expected, measurement
            shapes = [re.sub(r"<\w+>", r"\\w+", name) for name in documented]
            undocumented = [name for name in received if not any(re.fullmatch(shape, name) for shape in shapes)]
            assert undocumented == [], measurement
            for row in points_of(server, measurement, database, instance):
                assert row["host"] == AWKWARD_HOST
        daemon = points_of(server, "plancton_daemon", database, instance)
        assert [row["mode"] for row in daemon] == ["active", "active", "stopping"]
        assert [row["pilots"] for row in daemon] == [1, 1, 1]
        assert [row["drain_deadline_seconds"] for row in daemon[:2]] == [None, DRAIN_BY]
        events = points_of(server, "plancton_pilot_event", database, instance)
        assert [(row["kind"], row["reason"]) for row in events] == [
            (event.kind, event.reason if event.kind in ("killed", "stopped") else None) for event in EVENTS
        ]
        exited = next(row for row in events if row["kind"] == "exited")
        assert (exited["exit_code"], exited["runtime_seconds"], exited["pilot"]) == (137, 42.5, "p-1")
        host = points_of(server, "plancton_host", database, instance)
        assert [(row["owner_cores"], row["pilots_percent"]) for row in host] == [(0.5, 50.0)] * 2
        assert [row["dropped_points"] for row in points_of(server, "plancton_sender", database, instance)] == [0, 0]
        ledger = points_of(server, "plancton_ledger", database, instance)
        assert [(row["cpu_seconds"], row["ended_finished"], row["given_way_keyboard_seconds"]) for row in ledger] == [
            (12.5, 2, 30.0)
        ] * 2
    created = [r.getMessage() for r in caplog.records if "created the database" in r.getMessage()]
    assert created == [f"InfluxDB {tls_influxd.url(fresh)}: created the database {fresh}"]


def test_a_bad_password_is_logged_once_and_the_other_targets_go_on(
    auth_influxd: InfluxServer, caplog: pytest.LogCaptureFixture
) -> None:
    instance = unique_instance()
    made = f"made_{instance}"
    bad = auth_influxd.url(WRITER_DATABASE, WRITER_USER, "wrong-password-3")
    good = auth_influxd.url(WRITER_DATABASE, WRITER_USER, WRITER_PASSWORD)
    not_allowed = auth_influxd.url("never_made", WRITER_USER, WRITER_PASSWORD)
    admin = auth_influxd.url(made, ADMIN_USER, ADMIN_PASSWORD)
    reporter = InfluxReporter(settings=QUICK_RETRIES)
    with caplog.at_level(logging.INFO, logger="plancton"):
        reporter.configure(config_for(instance, [bad, good, not_allowed, admin]))
        for uptime in range(8):
            reporter.loop(loop_report(float(uptime)))
            time.sleep(0.25)  # the failing targets retry several times meanwhile
        reporter.close()

    expected = [*map(float, range(8)), 7.0]  # and the "stopping" point, with the last loop's figures
    for database in (WRITER_DATABASE, made):
        wait_for_uptimes(auth_influxd, database, instance, lambda found: found == expected)
    messages = [record.getMessage() for record in caplog.records]
    assert len([m for m in messages if "authorization failed" in m]) == 1
    assert len([m for m in messages if "never_made" in m and "creating it failed" in m]) == 1
    assert len([m for m in messages if "created the database" in m]) == 1
    for secret in ("wrong-password-3", WRITER_PASSWORD, ADMIN_PASSWORD):
        assert not [m for m in messages if secret in m]


def test_points_kept_while_the_database_is_down_arrive_when_it_returns() -> None:
    server = start_influxd()
    instance = unique_instance()
    try:
        server.query('CREATE DATABASE "kept"')
        server.stop()
        reporter = InfluxReporter(settings=SenderSettings(capacity=8, retry_max_seconds=0.3))
        reporter.configure(config_for(instance, [server.url("kept")]))
        for uptime in range(10):  # two points a loop (daemon and sender): the first twelve are dropped
            reporter.loop(loop_report(float(uptime), sampled=False))
        time.sleep(1)  # a few failed attempts while the server is down
        server.start()
        wait_for_uptimes(server, "kept", instance, lambda found: found == [6.0, 7.0, 8.0, 9.0])
        reporter.loop(loop_report(10.0, sampled=False))
        reporter.close()
        assert uptimes(server, "kept", instance)[:5] == [6.0, 7.0, 8.0, 9.0, 10.0]
        last = points_of(server, "plancton_sender", "kept", instance)[-1]
        assert (last["dropped_points"], last["sent_points"]) == (12, 8)
    finally:
        remove(server)


def test_reporting_never_waits_for_a_hung_database() -> None:
    silent = SilentServer()
    try:
        reporter = InfluxReporter(settings=SenderSettings(timeout_seconds=120))
        reporter.configure(config_for(unique_instance(), [f"http://127.0.0.1:{silent.port}#hung"]))
        began = time.monotonic()
        for uptime in range(300):
            reporter.loop(loop_report(float(uptime)))
            reporter.pilot_event(EVENTS[0])
        wait_until(lambda: silent.accepted, 30, "the sender's connection")
        reporter.close()
        # the sender waits up to 120 s for an answer; the reporter's callers never do
        assert time.monotonic() - began < 60
    finally:
        silent.close()


def test_a_reload_changes_the_targets(tls_influxd: InfluxServer) -> None:
    instance = unique_instance()
    first, second = tls_influxd.url(f"a_{instance}"), tls_influxd.url(f"b_{instance}")
    reporter = InfluxReporter()
    reporter.configure(config_for(instance, [first]))
    reporter.loop(loop_report(1.0))
    reporter.configure(config_for(instance, [first, second]))
    reporter.loop(loop_report(2.0))
    reporter.configure(config_for(instance, [second]))
    reporter.loop(loop_report(3.0))
    reporter.close()
    wait_for_uptimes(tls_influxd, f"a_{instance}", instance, lambda found: found == [1.0, 2.0])
    wait_for_uptimes(tls_influxd, f"b_{instance}", instance, lambda found: found == [2.0, 3.0, 3.0])


def test_the_daemon_keeps_its_period_while_a_database_hangs(
    installation: Installation, tls_influxd: InfluxServer, auth_influxd: InfluxServer
) -> None:
    silent = SilentServer()
    database = f"e2e_{installation.instance}"
    urls = [
        f"http://127.0.0.1:{silent.port}#hung",
        tls_influxd.url(database),
        auth_influxd.url(WRITER_DATABASE, WRITER_USER, "wrong-password-4"),
        auth_influxd.url(WRITER_DATABASE, WRITER_USER, WRITER_PASSWORD),
    ]
    try:
        installation.write_config(STEADY_POLICY + f"max_docks: 0\ninfluxdb_url: {json.dumps(urls)}\n")
        started = installation.ctl("start")
        assert started.returncode == 0, started.stderr
        wait_until(lambda: silent.accepted, 60, "a request to the hung database")
        before = installation.state().loops
        time.sleep(6)
        after = installation.state().loops
        # main_sleep is 0.5 s: about 12 loops; a loop that waited for the hung database
        # (5 s per request) would allow at most 2
        assert after - before >= 6
        for server, name in ((tls_influxd, database), (auth_influxd, WRITER_DATABASE)):
            wait_for_uptimes(server, name, installation.instance, lambda found: len(found) >= 6)
        stopped = installation.ctl("stop")
        assert "gracefully" in stopped.stdout
        log = installation.log()
        assert log.count("authorization failed") == 1
        assert log.count(f"127.0.0.1:{silent.port}#hung") >= 2  # "sending metrics there", then the time-out
        assert "wrong-password-4" not in log and WRITER_PASSWORD not in log
    finally:
        silent.close()
