"""The InfluxDB reporter: the daemon's reports, as points, to every ``influxdb_url`` target.

:class:`InfluxReporter` is a :class:`~plancton.metrics.reporting.Reporter`; each target has
its own :class:`~plancton.metrics.influx_sender.TargetSender`.
"""

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from plancton.config.influxdb_url import parse_target
from plancton.config.schema import Config
from plancton.control.ledger import Day
from plancton.metrics.influx_sender import SenderSettings, TargetSender
from plancton.metrics.points import (
    Point,
    Tags,
    daemon_point,
    event_point,
    ledger_point,
    legacy_event_points,
    legacy_loop_points,
    loop_points,
    sender_point,
)
from plancton.metrics.reporting import STOPPING_MODE, LoopReport, PilotEvent, SenderStats

log = logging.getLogger(__name__)

#: How long close() waits in all for the senders' last writes.
CLOSE_SECONDS = 3.0


class InfluxReporter:
    """The daemon's reporter: turns loop reports and pilot events into points for every
    target of ``influxdb_url``; with none, it does nothing. Never blocks or raises.

    Args:
        host_name: the ``host`` tag (default: this host's name).
        settings: buffering and timeouts of every target.
        ledger: returns the ledger's totals over every day it keeps (None: no ledger).
    """

    def __init__(
        self,
        host_name: str | None = None,
        settings: SenderSettings | None = None,
        ledger: Callable[[], Day] | None = None,
    ) -> None:
        self.ledger = ledger
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
        lent = self.ledger() if self.ledger is not None else None

        def build(tags: Tags, time_ns: int) -> list[Point]:
            points = loop_points(report, tags, time_ns)
            points += [ledger_point(lent, tags, time_ns)] if lent is not None else []
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
            # legacy series are tagged with the host's short name, as Plancton 0.6 did
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
