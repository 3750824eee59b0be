"""Monitoring: points built from the daemon's reports, sent to InfluxDB without ever making
the daemon wait.

Point building is pure (:func:`loop_points`, :func:`daemon_point`, :func:`event_point`,
:func:`sender_point`, :meth:`Point.line`, and the series of Plancton 0.6:
:func:`legacy_loop_points`, :func:`legacy_event_points`). Each target has a bounded :class:`PointBuffer`
drained by its own background thread (:class:`TargetSender`), every request with a timeout;
while a database is down its points wait in the buffer, the oldest dropped first when it is
full, and the count of dropped points is itself sent. :class:`InfluxReporter` is the daemon's
:class:`~plancton.metrics.reporting.Reporter`. docs/metrics.md describes the schema.
"""

import logging
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from plancton.config.influxdb_url import InfluxTarget, parse_target
from plancton.config.schema import Config
from plancton.core.policy import LIVE_STATES, HostSample
from plancton.metrics import influx
from plancton.metrics.influx import DatabaseMissing, InfluxError, InfluxUnavailable
from plancton.metrics.reporting import LoopReport, PilotEvent

log = logging.getLogger(__name__)

DAEMON = "plancton_daemon"
HOST = "plancton_host"
PILOT_EVENT = "plancton_pilot_event"
SENDER = "plancton_sender"
#: The series of Plancton 0.6, written as well with ``influxdb_legacy_series: true``.
LEGACY_DAEMON = "daemon"
LEGACY_MEASUREMENT = "measurement"
LEGACY_CONTAINER = "container"
#: Modes in which no pilot starts: the original's only such status was "draining".
LEGACY_DRAINING_MODES = frozenset({"draining", "drain-stop", "force-stop"})

#: Pilot states always present as ``pilots_<state>`` fields (0 when none), so graphs do not gap.
COUNTED_STATES = ("running", "paused", "created", "exited", "spare")
#: Event kinds whose reason is a tag (a short word); other reasons are free text in a field.
REASON_TAG_KINDS = frozenset({"stopped", "killed"})
#: Most points in one write request (InfluxDB advises batches of up to 5000).
BATCH_POINTS = 1000
#: How long close() waits in all for the senders' last writes.
CLOSE_SECONDS = 3.0
#: The daemon's mode as sent by close(): the daemon is going away.
STOPPING_MODE = "stopping"

FieldValue = bool | int | float | str
Tags = Mapping[str, str]


@dataclass(frozen=True)
class SenderSettings:
    """How each target's sender buffers, waits and complains.

    Attributes:
        capacity: most points kept per target while its database is unreachable (at the
            default 5 s loop, about three points a loop: some 4 hours).
        timeout_seconds: how long one request may take before it is given up.
        retry_max_seconds: the longest wait between two attempts to a failing target
            (the wait doubles from 1 s after each failure).
        complaint_period_seconds: the same failure of a target is logged once per period.
    """

    capacity: int = 10000
    timeout_seconds: float = 5.0
    retry_max_seconds: float = 15.0
    complaint_period_seconds: float = 300.0


# -- points ---------------------------------------------------------------------------------


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
    """Given a loop report, return the daemon's point: mode, uptime, pilots, loop time."""
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

    Numbers are floats, as the original wrote them, so that they go into its fields.
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


@dataclass(frozen=True)
class SenderStats:
    """One target's counters since the daemon started, and the points waiting now."""

    sent: int = 0
    dropped: int = 0
    buffered: int = 0


def sender_point(stats: SenderStats, tags: Tags, time_ns: int) -> Point:
    """Given a target's counters, return the point that reports them to that target."""
    fields: dict[str, FieldValue] = {
        "sent_points": stats.sent,
        "dropped_points": stats.dropped,
        "buffered_points": stats.buffered,
    }
    return Point(SENDER, tags, fields, time_ns)


# -- buffering and sending ------------------------------------------------------------------


class PointBuffer:
    """A bounded, thread-safe queue of line-protocol points; when full, the oldest go first.

    Args:
        capacity: the most points kept; ``dropped`` counts the points lost over it.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.dropped = 0
        self._lines: deque[str] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lines)

    def put(self, lines: Iterable[str]) -> None:
        """Add the newest points, dropping the oldest beyond the capacity."""
        with self._lock:
            self._lines.extend(lines)
            self._trim()

    def take(self, count: int) -> list[str]:
        """Remove and return up to ``count`` of the oldest points."""
        with self._lock:
            return [self._lines.popleft() for _ in range(min(count, len(self._lines)))]

    def put_back(self, lines: list[str]) -> None:
        """Return points taken earlier to the front (they are the oldest), dropping the
        oldest beyond the capacity."""
        with self._lock:
            self._lines.extendleft(reversed(lines))
            self._trim()

    def discard(self, count: int) -> None:
        """Count points that were taken and will never be sent as dropped."""
        with self._lock:
            self.dropped += count

    def _trim(self) -> None:
        excess = len(self._lines) - self.capacity
        for _ in range(excess):
            self._lines.popleft()
        self.dropped += max(0, excess)


class Complaints:
    """Logs one target's failures: a new kind of failure at once, the same one again only
    once per period, and the recovery once.

    Args:
        period: seconds between two records of the same failure.
        clock: a monotonic clock.
    """

    def __init__(self, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period = period
        self.clock = clock
        self._failing: str | None = None
        self._logged_at = -math.inf

    def failed(self, error: InfluxError, waiting: int) -> None:
        """Record a failure; log it unless the same one was logged less than a period ago."""
        kind, now = type(error).__name__, self.clock()
        if kind == self._failing and now - self._logged_at < self.period:
            return
        self._failing, self._logged_at = kind, now
        kept = f"{waiting} points kept for a retry" if error.retry else "these points are dropped"
        log.warning("InfluxDB %s; %s (logged again at most every %.0f s while it lasts)", error, kept, self.period)

    def recovered(self, where: str) -> None:
        """Record a success; log it when the target was failing."""
        if self._failing is not None:
            log.info("InfluxDB %s: writing again", where)
        self._failing, self._logged_at = None, -math.inf


class TargetSender:
    """Sends one target's points from its buffer in a background thread.

    :meth:`put` never blocks on the network. Points that cannot be sent are kept (up to
    ``settings.capacity``) and retried with a back-off; a missing database is created once.

    Args:
        target: the InfluxDB database to write to.
        settings: buffer size, timeouts and log period.
        clock: a monotonic clock, for the log period.
    """

    def __init__(self, target: InfluxTarget, settings: SenderSettings, clock: Callable[[], float] = time.monotonic):
        self.target = target
        self.settings = settings
        self.buffer = PointBuffer(settings.capacity)
        self.sent = 0
        self.in_flight = 0
        self.complaints = Complaints(settings.complaint_period_seconds, clock)
        self._creation_tried = False
        self._connection = influx.InfluxConnection(target, settings.timeout_seconds)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"plancton-influx-{target.port}", daemon=True)
        self._thread.start()

    def put(self, lines: Iterable[str]) -> None:
        """Queue points for sending; returns at once."""
        self.buffer.put(lines)
        self._wake.set()

    def pending(self) -> int:
        """Return how many points wait to be sent, the one request under way included."""
        return len(self.buffer) + self.in_flight

    def stats(self) -> SenderStats:
        """Return this target's counters now."""
        return SenderStats(sent=self.sent, dropped=self.buffer.dropped, buffered=self.pending())

    def close(self) -> None:
        """Ask the thread to send what it holds once more (unless the target is failing) and end."""
        self._closing.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end; return whether it has."""
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    def _run(self) -> None:
        failures = 0
        try:
            while True:
                closing = self._wait(failures)
                if closing and failures:
                    return
                failures = 0 if self._send_buffered(self._connection) else failures + 1
                if closing:
                    return
        except Exception:
            log.exception("InfluxDB %s: the sender failed; no more points go there", self.target.masked)
        finally:
            self._connection.close()

    def _wait(self, failures: int) -> bool:
        """Wait for points (or, after failures, for the back-off); return whether closing."""
        if failures:
            self._closing.wait(min(self.settings.retry_max_seconds, 2.0 ** (failures - 1)))
        else:
            self._wake.wait()
            self._wake.clear()
        return self._closing.is_set()

    def _send_buffered(self, connection: influx.InfluxConnection) -> bool:
        """Send every buffered point; return False when the target failed (points kept)."""
        while batch := self.buffer.take(BATCH_POINTS):
            self.in_flight = len(batch)
            try:
                connection.write(batch)
            except InfluxError as error:
                if not self._after_failure(connection, batch, error):
                    return False
                continue
            finally:
                self.in_flight = 0
            self.sent += len(batch)
            self.complaints.recovered(self.target.masked)
        return True

    def _after_failure(self, connection: influx.InfluxConnection, batch: list[str], error: InfluxError) -> bool:
        """Keep (or drop) a batch that failed; return whether to go on sending at once."""
        if not error.retry:
            self.buffer.discard(len(batch))
            self.complaints.failed(error, len(self.buffer))
            return True
        self.buffer.put_back(batch)
        if isinstance(error, DatabaseMissing):
            return self._create_database(connection, error)
        self.complaints.failed(error, len(self.buffer))
        return False

    def _create_database(self, connection: influx.InfluxConnection, missing: DatabaseMissing) -> bool:
        """Create the missing database, once; return whether it now exists."""
        if self._creation_tried:
            self.complaints.failed(missing, len(self.buffer))
            return False
        try:
            connection.create_database()
        except InfluxError as error:
            # a server that went away may allow it later; a refusal will not change
            self._creation_tried = not isinstance(error, InfluxUnavailable)
            detail = f"{missing.detail}, and creating it failed: {error.detail}"
            self.complaints.failed(DatabaseMissing(missing.where, detail), len(self.buffer))
            return False
        self._creation_tried = True
        log.info("InfluxDB %s: created the database %s", self.target.masked, self.target.database)
        return True


# -- the reporter ---------------------------------------------------------------------------


class InfluxReporter:
    """The daemon's reporter: turns loop reports and pilot events into points for every
    target of ``influxdb_url``; with none, it does nothing. Never blocks or raises.

    Args:
        host_name: the ``host`` tag (default: this host's name).
        settings: buffering and timeouts of every target.
    """

    def __init__(self, host_name: str | None = None, settings: SenderSettings | None = None) -> None:
        self.host_name = host_name or socket.gethostname()
        self.settings = settings or SenderSettings()
        self._senders: dict[str, TargetSender] = {}
        self._tags: dict[str, str] = {"host": self.host_name}
        self._legacy_hostname: str | None = None  # with influxdb_legacy_series
        self._last_report: LoopReport | None = None
        self._last_time_ns = 0
        self._lock = threading.Lock()

    def configure(self, config: Config) -> None:
        """Send to the configuration's targets from now on: start new ones, end removed ones
        (an unchanged target keeps its buffered points)."""
        self._guard(self._configure, config)

    def loop(self, report: LoopReport) -> None:
        """Queue the points of one loop, and each target's own counters."""
        self._last_report = report
        legacy = self._legacy_hostname

        def build(tags: Tags, time_ns: int) -> list[Point]:
            points = loop_points(report, tags, time_ns)
            return points + (legacy_loop_points(report, legacy, time_ns) if legacy else [])

        self._guard(self._send, build, True)

    def pilot_event(self, event: PilotEvent) -> None:
        """Queue the point of one pilot event."""
        legacy = self._legacy_hostname

        def build(tags: Tags, time_ns: int) -> list[Point]:
            points = [event_point(event, tags, time_ns)]
            return points + (legacy_event_points(event, legacy, time_ns) if legacy else [])

        self._guard(self._send, build, False)

    def sender_stats(self) -> dict[str, SenderStats]:
        """Return each target's counters now, by its URL (password masked)."""
        with self._lock:
            senders = list(self._senders.values())
        return {sender.target.masked: sender.stats() for sender in senders}

    def close(self) -> None:
        """Report the daemon as stopping, give the senders a few seconds to send, end them."""
        report = self._last_report
        if report is not None:
            stopping = replace(report, mode=STOPPING_MODE)
            self._guard(self._send, lambda tags, time_ns: [daemon_point(stopping, tags, time_ns)], False)
        with self._lock:
            senders = list(self._senders.values())
            self._senders.clear()
        for sender in senders:
            sender.close()
        deadline = time.monotonic() + CLOSE_SECONDS
        for sender in senders:
            if not sender.join(deadline - time.monotonic()) or sender.pending():
                log.warning("InfluxDB %s: %d points not sent at shutdown", sender.target.masked, sender.pending())

    def _configure(self, config: Config) -> None:
        wanted = dict.fromkeys(config.influxdb_url)
        with self._lock:
            self._tags = {"host": self.host_name, "instance": config.instance}
            # the original tagged its points with the host's short name
            self._legacy_hostname = self.host_name.split(".")[0] if config.influxdb_legacy_series else None
            for url in [url for url in self._senders if url not in wanted]:
                sender = self._senders.pop(url)
                sender.close()
                log.info("InfluxDB %s: no longer a target", sender.target.masked)
            for url in [url for url in wanted if url not in self._senders]:
                try:
                    target = parse_target(url)
                except ValueError as error:
                    log.error("influxdb_url: %s; no metrics go there", error)
                    continue
                self._senders[url] = TargetSender(target, self.settings)
                log.info("InfluxDB %s: sending metrics there", target.masked)

    def _send(self, build: Callable[[Tags, int], list[Point]], with_counters: bool) -> None:
        with self._lock:
            senders = list(self._senders.values())
            tags = self._tags
            # strictly increasing times, so that two events of one series never overwrite each other
            time_ns = self._last_time_ns = max(time.time_ns(), self._last_time_ns + 1)
        if not senders:
            return
        lines = [point.line() for point in build(tags, time_ns)]
        for sender in senders:
            counters = [sender_point(sender.stats(), tags, time_ns).line()] if with_counters else []
            sender.put(lines + counters)

    @staticmethod
    def _guard(action: Callable[..., None], *args: object) -> None:
        """Run an action, logging instead of raising: reporting must never stop the daemon."""
        try:
            action(*args)
        except Exception:
            log.exception("metrics: a report could not be queued")
