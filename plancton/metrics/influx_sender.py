"""Sending line-protocol points to InfluxDB targets without ever making the daemon wait.

Each target has a bounded :class:`PointBuffer` drained by its own background thread
(:class:`TargetSender`), every request with a timeout; while a database is down its points
wait in the buffer, the oldest dropped first when it is full, and the count of dropped points
is itself sent. :class:`Complaints` keeps the log to one line per failure and period.
"""

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from plancton.config.influxdb_url import InfluxTarget
from plancton.metrics import influx
from plancton.metrics.influx import DatabaseMissing, InfluxError, InfluxUnavailable
from plancton.metrics.reporting import SenderStats

log = logging.getLogger(__name__)

#: Most points in one write request (InfluxDB advises batches of up to 5000).
BATCH_POINTS = 1000


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
