"""InfluxDB points built from the daemon's reports, and their line protocol: pure functions.

:func:`loop_points`, :func:`daemon_point`, :func:`host_point`, :func:`event_point`,
:func:`sender_point`, :func:`ledger_point` and :meth:`Point.line`, and the series of Plancton 0.6:
:func:`legacy_loop_points`, :func:`legacy_event_points`. docs/metrics.md describes the schema;
:mod:`plancton.metrics.influx_sender` sends them.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from plancton.control.ledger import Day, Ending, GiveWay
from plancton.core.policy import LIVE_STATES, HostSample
from plancton.metrics.reporting import COUNTED_STATES, REASON_TAG_KINDS, LoopReport, PilotEvent, SenderStats

DAEMON = "plancton_daemon"
HOST = "plancton_host"
PILOT_EVENT = "plancton_pilot_event"
SENDER = "plancton_sender"
LEDGER = "plancton_ledger"
#: The series of Plancton 0.6, written as well with ``influxdb_legacy_series: true``.
LEGACY_DAEMON = "daemon"
LEGACY_MEASUREMENT = "measurement"
LEGACY_CONTAINER = "container"
#: Modes in which no pilot starts: the legacy series' only such status was "draining".
LEGACY_DRAINING_MODES = frozenset({"draining", "drain-stop", "force-stop"})

FieldValue = bool | int | float | str
Tags = Mapping[str, str]


@dataclass(frozen=True)
class Point:
    """One InfluxDB point: measurement, tags, fields and a time in nanoseconds since the epoch."""

    measurement: str
    tags: Tags
    fields: Mapping[str, FieldValue]
    time_ns: int

    def line(self) -> str:
        """Return the point in InfluxDB's line protocol.

        Empty tag values and non-finite numbers are left out (line protocol cannot carry them).
        """
        tags = "".join(f",{_escape(key)}={_escape(value)}" for key, value in sorted(self.tags.items()) if value)
        fields = ",".join(
            f"{_escape(key)}={_field_value(value)}" for key, value in self.fields.items() if _finite(value)
        )
        return f"{_escape(self.measurement, '=')}{tags} {fields} {self.time_ns}"


def _escape(text: str, keep: str = "") -> str:
    """Escape a measurement, tag key or value, or field key for line protocol 1.x.

    There a backslash escapes only a comma, space or equals sign and is otherwise kept as
    it is, so a backslash before one of those cannot be written: backslashes become slashes.
    Newlines become spaces.
    """
    text = text.replace("\\", "/").replace("\n", " ")
    for special in ", =":
        if special not in keep:
            text = text.replace(special, f"\\{special}")
    return text


def _finite(value: FieldValue) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _field_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'"{quoted}"'


def daemon_point(report: LoopReport, tags: Tags, time_ns: int) -> Point:
    """Given a loop report, return the daemon's point: mode, uptime, pilots, loop time, and
    the drain deadline while there is one."""
    states = dict.fromkeys(COUNTED_STATES, 0) | report.pilots_by_state
    fields: dict[str, FieldValue] = {
        "mode": report.mode,
        "uptime_seconds": float(report.uptime_seconds),
        "pilots": sum(count for state, count in report.pilots_by_state.items() if state in LIVE_STATES),
    }
    fields |= {f"pilots_{state}": count for state, count in states.items()}
    fields |= {
        "config_revision": report.config_revision,
        "loop_seconds": float(report.loop_seconds),
        "api_calls": report.api_calls,
        "engine_available": report.engine_available,
    }
    if report.drain_by is not None:
        fields["drain_deadline_seconds"] = float(report.drain_by)
    return Point(DAEMON, tags, fields, time_ns)


def host_point(sample: HostSample, tags: Tags, time_ns: int) -> Point:
    """Given a host sample, return the host's point: CPU in cores and percent, memory."""
    percent = 100.0 / max(1, sample.ncpus)
    fields: dict[str, FieldValue] = {"ncpus": sample.ncpus}
    for name, cores in (("busy", sample.busy_cores), ("owner", sample.owner_cores), ("pilots", sample.pilots_cores)):
        fields[f"{name}_cores"] = float(cores)
        fields[f"{name}_percent"] = float(cores * percent)
    fields["available_bytes"] = int(sample.available_bytes)
    if sample.cpu_pressure is not None:
        fields["cpu_pressure_percent"] = float(sample.cpu_pressure)
    if sample.memory_pressure is not None:
        fields["memory_pressure_percent"] = float(sample.memory_pressure)
    return Point(HOST, tags, fields, time_ns)


def loop_points(report: LoopReport, tags: Tags, time_ns: int) -> list[Point]:
    """Given a loop report, return its points: the daemon's, and the host's when sampled."""
    points = [daemon_point(report, tags, time_ns)]
    if report.sample is not None:
        points.append(host_point(report.sample, tags, time_ns))
    return points


def ledger_point(lent: Day, tags: Tags, time_ns: int) -> Point:
    """Given the ledger's totals over every day it keeps, return its point: what the node
    lent, counted across restarts of the daemon."""
    fields: dict[str, FieldValue] = {
        "cpu_seconds": float(lent.cpu_seconds),
        "lent_seconds": float(lent.lent_seconds),
        "partly_lent_seconds": float(lent.partly_lent_seconds),
        "pilots_started": lent.started,
    }
    fields |= {f"ended_{name.value}": lent.ended.get(name.value, 0) for name in Ending}
    fields |= {
        f"given_way_{name.value}_seconds": float(lent.given_way_seconds.get(name.value, 0.0)) for name in GiveWay
    }
    return Point(LEDGER, tags, fields, time_ns)


def event_point(event: PilotEvent, tags: Tags, time_ns: int) -> Point:
    """Given a pilot event, return its point, tagged with its kind (and reason when stopped
    or killed)."""
    event_tags = {**tags, "kind": event.kind}
    fields: dict[str, FieldValue] = {"count": 1}
    if event.pilot:
        fields["pilot"] = event.pilot
    if event.kind in REASON_TAG_KINDS and event.reason:
        event_tags["reason"] = event.reason
    elif event.reason:
        fields["message"] = event.reason
    if event.exit_code is not None:
        fields["exit_code"] = int(event.exit_code)
    if event.runtime_seconds is not None:
        fields["runtime_seconds"] = float(event.runtime_seconds)
    return Point(PILOT_EVENT, event_tags, fields, time_ns)


def legacy_loop_points(report: LoopReport, hostname: str, time_ns: int) -> list[Point]:
    """Given a loop report and the host's short name, return the points Plancton 0.6 wrote
    at each loop: ``daemon`` (uptime, containers, status: active, draining, or waiting while
    the engine is unreachable) and ``measurement`` (cpu_eff: the host's busy CPU, percent).

    Numbers are floats, as Plancton 0.6 wrote them, so that they go into its fields.
    """
    tags = {"hostname": hostname}
    if not report.engine_available:
        status = "waiting"
    else:
        status = "draining" if report.mode in LEGACY_DRAINING_MODES else "active"
    live = sum(count for state, count in report.pilots_by_state.items() if state in LIVE_STATES)
    fields: dict[str, FieldValue] = {
        "uptime": float(report.uptime_seconds),
        "containers": float(live),
        "status": status,
    }
    points = [Point(LEGACY_DAEMON, tags, fields, time_ns)]
    if report.sample is not None:
        busy_percent = 100.0 * report.sample.busy_cores / max(1, report.sample.ncpus)
        points.append(Point(LEGACY_MEASUREMENT, tags, {"cpu_eff": float(busy_percent)}, time_ns))
    return points


def legacy_event_points(event: PilotEvent, hostname: str, time_ns: int) -> list[Point]:
    """Given a pilot event and the host's short name, return the ``container`` point Plancton
    0.6 wrote for a pilot's end (none for other events): tags ``started`` and ``killed``
    ("True" or "False"), field ``uptime`` (seconds it ran).
    """
    ends = {
        "exited": ("True", "False"),
        "stopped": ("True", "True"),
        "killed": ("True", "True"),
        "start_failed": ("False", "False"),
    }
    if event.kind not in ends:
        return []
    started, killed = ends[event.kind]
    tags = {"hostname": hostname, "started": started, "killed": killed}
    return [Point(LEGACY_CONTAINER, tags, {"uptime": float(event.runtime_seconds or 0.0)}, time_ns)]


def sender_point(stats: SenderStats, tags: Tags, time_ns: int) -> Point:
    """Given a target's counters, return the point that reports them to that target."""
    fields: dict[str, FieldValue] = {
        "sent_points": stats.sent,
        "dropped_points": stats.dropped,
        "buffered_points": stats.buffered,
    }
    return Point(SENDER, tags, fields, time_ns)
