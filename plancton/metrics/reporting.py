"""What the daemon reports, the interface of what receives it, and the names reporters share.

A report comes after each loop and for each pilot event. It goes to the InfluxDB reporter
(:mod:`plancton.metrics.influx_reporter`) and to the Prometheus endpoint and textfile
(:mod:`plancton.metrics.prometheus`), which both name states, reasons and modes as here.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from plancton.config.schema import Config
from plancton.core.holds import Hold
from plancton.core.policy import HostSample

log = logging.getLogger(__name__)

#: Pilot states always reported (0 when none), so graphs do not gap.
COUNTED_STATES = ("running", "paused", "created", "exited", "spare")
#: Event kinds whose reason is a short word (a tag, a label); other reasons are free text.
REASON_TAG_KINDS = frozenset({"stopped", "killed"})
#: The daemon's mode as reported at shutdown: the daemon is going away.
STOPPING_MODE = "stopping"


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
    #: for exited: Plancton had stopped or killed the pilot itself
    by_plancton: bool = False
    #: for exited: the pilot never ran, or exited at once by itself (a failure)
    failed: bool = False


@dataclass(frozen=True)
class SenderStats:
    """One target's counters since the daemon started, and the points waiting now."""

    sent: int = 0
    dropped: int = 0
    buffered: int = 0


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
    #: what held pilots back, for metrics
    holds: tuple[Hold, ...] = field(default_factory=tuple)
    #: what identifies the pilots' CPU counter, and the CPU seconds it holds (None: unread)
    pilots_cpu: tuple[str, float] | None = None
    #: the pilots' CPU cap while they lend part of the host to its owner (None: none)
    cpu_cap: float | None = None
    #: the engine that answers, as "Docker Engine 20.10.24" (empty: not known yet)
    engine: str = ""
    #: whether the pilots' image is there to start them with (None: not looked for yet)
    image_ready: bool | None = None
    #: the drain deadline in force (Unix seconds), or None
    drain_by: float | None = None
    #: whether the configuration file on disk was refused, the daemon keeping its last good one
    config_rejected: bool = False
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
