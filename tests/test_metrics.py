"""Unit tests of the metrics: points and their line protocol, the bounded buffer, and the
once-per-period complaints. No server: see test_influxdb.py for those."""

import logging
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.config import loader, schema
from plancton.core.policy import HostSample
from plancton.metrics.influx import InfluxDenied, InfluxRejected, InfluxUnavailable
from plancton.metrics.influx_reporter import InfluxReporter
from plancton.metrics.influx_sender import Complaints, PointBuffer
from plancton.metrics.points import Point, daemon_point, event_point, host_point, loop_points, sender_point
from plancton.metrics.reporting import LoopReport, PilotEvent, SenderStats
from tests.support import services

TAGS = {"host": "node1", "instance": "plancton"}
FACTS = schema.HostFacts(ncpus=4, ram_bytes=8 * 2**30, swap_bytes=0)


def report(**changes: object) -> LoopReport:
    values: dict[str, object] = {
        "mode": "active",
        "uptime_seconds": 12.5,
        "pilots_by_state": {"running": 2, "paused": 1, "exited": 1},
        "config_revision": "abc123",
        "sample": HostSample(ncpus=4, busy_cores=3.0, pilots_cores=2.0, available_bytes=2**30, cpu_pressure=1.5),
        "loop_seconds": 0.25,
        "api_calls": 3,
        "engine_available": True,
    }
    values.update(changes)
    return LoopReport(**values)  # type: ignore[arg-type]


# -- line protocol --------------------------------------------------------------------------


def test_line_protocol_types_and_sorted_tags() -> None:
    point = Point("m", {"b": "2", "a": "1"}, {"i": 3, "f": 2.0, "s": 'say "hi"', "t": True}, 17)
    assert point.line() == 'm,a=1,b=2 i=3i,f=2.0,s="say \\"hi\\"",t=true 17'


def test_line_protocol_escapes_tags_and_drops_what_it_cannot_carry() -> None:
    point = Point("m", {"host": "a b,c=d", "empty": ""}, {"x y": 1.5, "nan": float("nan"), "n": "l1\nl2"}, 5)
    assert point.line() == 'm,host=a\\ b\\,c\\=d x\\ y=1.5,n="l1 l2" 5'
    assert Point("m", {"host": "a\\"}, {"s": "b\\"}, 5).line() == 'm,host=a/ s="b\\\\" 5'


#: What line protocol 1.x reads as an escaped character: a backslash escapes only these.
ESCAPED = re.compile(r"\\([, =])")


@given(st.text(st.characters(blacklist_characters="\\"), min_size=1))
def test_any_tag_value_reads_back_as_written(value: str) -> None:
    line = Point("m", {"t": value}, {"n": 1}, 7).line()
    separators = ESCAPED.sub("", line)
    assert "\n" not in line
    assert (separators.count(" "), separators.count(","), separators.count("=")) == (2, 1, 2)
    assert line.endswith(" n=1i 7")
    assert ESCAPED.sub(r"\1", line.removesuffix(" n=1i 7")) == "m,t=" + value.replace("\n", " ")


# -- points ---------------------------------------------------------------------------------


def test_daemon_point_counts_live_pilots_and_fills_absent_states() -> None:
    point = daemon_point(report(), TAGS, 1)
    assert point.measurement == "plancton_daemon"
    assert point.tags == TAGS
    assert point.fields["pilots"] == 3
    assert point.fields["pilots_running"] == 2
    assert point.fields["pilots_created"] == 0
    assert point.fields["pilots_exited"] == 1
    assert point.fields["mode"] == "active"
    assert point.fields["uptime_seconds"] == 12.5
    assert point.fields["loop_seconds"] == 0.25
    assert point.fields["config_revision"] == "abc123"
    assert point.fields["engine_available"] is True


def test_daemon_point_keeps_float_fields_float() -> None:
    point = daemon_point(report(uptime_seconds=5, loop_seconds=0), TAGS, 1)
    assert "uptime_seconds=5.0" in point.line()
    assert "loop_seconds=0.0" in point.line()


def test_host_point_in_cores_percent_and_bytes() -> None:
    sample = HostSample(ncpus=4, busy_cores=3.0, pilots_cores=2.0, available_bytes=2**30, memory_pressure=0.5)
    fields = host_point(sample, TAGS, 1).fields
    assert fields["owner_cores"] == 1.0
    assert fields["owner_percent"] == 25.0
    assert fields["pilots_percent"] == 50.0
    assert fields["busy_percent"] == 75.0
    assert fields["available_bytes"] == 2**30
    assert fields["memory_pressure_percent"] == 0.5
    assert "cpu_pressure_percent" not in fields


def test_loop_without_sample_has_no_host_point() -> None:
    assert [p.measurement for p in loop_points(report(), TAGS, 1)] == ["plancton_daemon", "plancton_host"]
    assert [p.measurement for p in loop_points(report(sample=None), TAGS, 1)] == ["plancton_daemon"]


def test_kill_reason_is_a_tag_and_exit_fields_are_typed() -> None:
    killed = event_point(PilotEvent("killed", "plancton-1", reason="owner reclaim"), TAGS, 1)
    assert killed.tags["reason"] == "owner reclaim"
    assert killed.tags["kind"] == "killed"
    assert (
        "plancton_pilot_event,host=node1,instance=plancton,kind=killed,reason=owner\\ reclaim count=1i" in killed.line()
    )
    exited = event_point(PilotEvent("exited", "plancton-2", exit_code=0, runtime_seconds=61), TAGS, 1)
    assert exited.fields == {"count": 1, "pilot": "plancton-2", "exit_code": 0, "runtime_seconds": 61.0}
    assert "reason" not in exited.tags


def test_start_failure_text_is_a_field_not_a_tag() -> None:
    failed = event_point(PilotEvent("start_failed", "", reason="no such image: x, y"), TAGS, 1)
    assert "reason" not in failed.tags
    assert failed.fields == {"count": 1, "message": "no such image: x, y"}


def test_sender_point_reports_dropped_points() -> None:
    point = sender_point(SenderStats(sent=10, dropped=3, buffered=2), TAGS, 9)
    assert (
        point.line()
        == "plancton_sender,host=node1,instance=plancton sent_points=10i,dropped_points=3i,buffered_points=2i 9"
    )


# -- the buffer -------------------------------------------------------------------------------


def test_full_buffer_drops_the_oldest_and_counts_them() -> None:
    buffer = PointBuffer(3)
    buffer.put(["1", "2"])
    buffer.put(["3", "4", "5"])
    assert buffer.dropped == 2
    assert buffer.take(10) == ["3", "4", "5"]


def test_points_put_back_stay_first_and_the_oldest_go_when_full() -> None:
    buffer = PointBuffer(4)
    buffer.put(["1", "2", "3"])
    batch = buffer.take(2)
    buffer.put(["4", "5", "6"])
    buffer.put_back(batch)
    assert buffer.dropped == 2
    assert buffer.take(10) == ["3", "4", "5", "6"]


@given(st.integers(1, 8), st.lists(st.tuples(st.sampled_from("ptb"), st.integers(0, 6)), max_size=40))
def test_buffer_keeps_the_newest_within_capacity_and_accounts_for_every_point(
    capacity: int, operations: list[tuple[str, int]]
) -> None:
    buffer, counter, taken, sent = PointBuffer(capacity), 0, [], []
    for operation, count in operations:
        if operation == "p":
            buffer.put(str(counter + i) for i in range(count))
            counter += count
        elif operation == "t":
            taken = buffer.take(count)
            sent += taken[: count // 2]
            buffer.put_back(taken[count // 2 :])
    remaining = buffer.take(capacity + 1)
    assert len(remaining) <= capacity
    assert len(remaining) + len(sent) + buffer.dropped == counter
    assert remaining == sorted(remaining, key=int)


# -- complaints -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_same_failure_is_logged_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    complaints = Complaints(period=300, clock=clock)
    denied = InfluxDenied("http://u:****@db:8086#x", "authorization failed (HTTP 401)")
    with caplog.at_level(logging.INFO, logger="plancton.metrics.influx_sender"):
        for _ in range(20):
            complaints.failed(denied, 5)
            clock.now += 10
        assert len(caplog.records) == 1
        clock.now += 200
        complaints.failed(denied, 5)
        assert len(caplog.records) == 2


def test_a_different_failure_and_the_recovery_are_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    complaints = Complaints(period=300, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="plancton.metrics.influx_sender"):
        complaints.recovered("db")
        complaints.failed(InfluxUnavailable("db", "timed out"), 1)
        complaints.failed(InfluxRejected("db", "points refused"), 1)
        complaints.recovered("db")
        complaints.recovered("db")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert "1 points kept for a retry" in messages[0]
    assert "these points are dropped" in messages[1]
    assert messages[2] == "InfluxDB db: writing again"


# -- the reporter without a server -------------------------------------------------------------


def test_a_reporter_whose_database_is_down_logs_it_once_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """What a user sees when InfluxDB is away: one line in the log naming the target, and the
    daemon's calls return as usual (nothing listens on port 9 of the loopback)."""
    reporter = InfluxReporter(host_name="node1")
    config, _ = loader.parse({"instance": "quiet", "influxdb_url": "http://127.0.0.1:9#metrics"}, FACTS)
    caplog.set_level(logging.WARNING)
    reporter.configure(config)
    for _ in range(5):
        reporter.loop(report())
        reporter.pilot_event(PilotEvent("started", "quiet-1"))
    services.poll(lambda: any("127.0.0.1:9" in record.getMessage() for record in caplog.records), 30, "the error")
    for _ in range(5):
        reporter.loop(report())
    about_target = [record.getMessage() for record in caplog.records if "127.0.0.1:9" in record.getMessage()]
    assert len(about_target) == 1, about_target
    assert "logged again at most every" in about_target[0]
    reporter.close()
    assert "points not sent at shutdown" in caplog.records[-1].getMessage()
