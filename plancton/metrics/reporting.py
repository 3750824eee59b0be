"""What the daemon reports after each loop and for each pilot event, and the interface of
anything that receives those reports (the InfluxDB sender in :mod:`plancton.metrics.points`,
the Prometheus endpoint and textfile in :mod:`plancton.metrics.prometheus`).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from plancton.config.schema import Config
from plancton.core.policy import HostSample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PilotEvent:
    """Something that happened to one pilot.

    ``kind`` is one of started, start_failed, exited, stopped, killed, paused, resumed;
    ``reason`` says why a pilot was stopped or killed (ttl, owner reclaim, memory,
    force-stop, image changed) or why a start failed.
    """

    kind: str
    pilot: str
    exit_code: int | None = None
    runtime_seconds: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class LoopReport:
    """The daemon's state at the end of one loop."""

    mode: str
    uptime_seconds: float
    pilots_by_state: dict[str, int]
    config_revision: str
    sample: HostSample | None
    loop_seconds: float
    api_calls: int
    engine_available: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)
    #: how the last ``plancton-bootstrap --update`` failed (an :class:`UpdateOutcome` value), or "" when it did not
    config_update_failure: str = ""
    #: when the last update ran (Unix seconds), or None when none ran
    config_update_checked_at: float | None = None


class Reporter(Protocol):
    """Receives the daemon's reports; must never block or raise."""

    def configure(self, config: Config) -> None:
        """Apply a (new) configuration, such as new targets."""

    def loop(self, report: LoopReport) -> None:
        """Record the end of one loop."""

    def pilot_event(self, event: PilotEvent) -> None:
        """Record one pilot event."""

    def close(self) -> None:
        """Send what can still be sent quickly and release resources."""


class NullReporter:
    """A reporter that keeps nothing, for instances without ``influxdb_url``."""

    def configure(self, config: Config) -> None:
        """Ignore the configuration."""

    def loop(self, report: LoopReport) -> None:
        """Ignore the loop report."""

    def pilot_event(self, event: PilotEvent) -> None:
        """Ignore the event."""

    def close(self) -> None:
        """Nothing to release."""


class Reporters:
    """Hands every report to each of several reporters, in order; one that fails (which a
    reporter should never do) is logged and the others still get the report."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def configure(self, config: Config) -> None:
        """Apply a (new) configuration to each reporter."""
        self._each(lambda reporter: reporter.configure(config))

    def loop(self, report: LoopReport) -> None:
        """Hand the end of one loop to each reporter."""
        self._each(lambda reporter: reporter.loop(report))

    def pilot_event(self, event: PilotEvent) -> None:
        """Hand one pilot event to each reporter."""
        self._each(lambda reporter: reporter.pilot_event(event))

    def close(self) -> None:
        """Close each reporter."""
        self._each(lambda reporter: reporter.close())

    def _each(self, call: Callable[[Reporter], None]) -> None:
        for reporter in self.reporters:
            try:
                call(reporter)
            except Exception:
                log.exception("metrics: the reporter %s failed", type(reporter).__name__)
