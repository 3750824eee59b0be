"""Keeps the node's ledger and its last day of CPU, from the daemon's loop reports and events.

Each loop adds what it saw to the ledger (:mod:`plancton.control.ledger`) and writes it, so a
daemon killed at any moment loses at most that loop; pilot events (which come from the
executor's threads) are counted until the next loop takes them. The minute-by-minute history
of the owner's CPU against the pilots' (:mod:`plancton.control.history`) is written when a
minute ends. Like every reporter, it never raises: a file it cannot write is logged once and
tried again at the next loop.
"""

import datetime
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable

from plancton.config.schema import Config
from plancton.control import history, ledger
from plancton.control.ledger import CpuReading, Day, Ending, GiveWay, Ledger, LedgerError, LoopAccount
from plancton.core.holds import Hold
from plancton.metrics.reporting import LoopReport, PilotEvent

log = logging.getLogger(__name__)

#: Why a pilot was stopped or killed, as the executor says it, and the ending it counts as.
_STOP_ENDINGS = {"owner reclaim": Ending.OWNER, "ttl": Ending.TTL, "memory": Ending.MEMORY}
#: The holds that mean the node gives way, each with the reason the ledger keeps, first the
#: one that wins when several hold at once.
_GIVE_WAY = (
    (Hold.SNOOZE, GiveWay.SNOOZE),
    (Hold.INPUT, GiveWay.KEYBOARD),
    (Hold.BATTERY, GiveWay.BATTERY),
    (Hold.RUN_HOURS, GiveWay.HOURS),
    (Hold.OWNER_BUSY, GiveWay.CPU),
    (Hold.MEMORY, GiveWay.MEMORY),
    (Hold.MODE, GiveWay.DRAIN),
    (Hold.DEADLINE, GiveWay.DRAIN),
)


def given_way(holds: tuple[Hold, ...]) -> GiveWay | None:
    """Given a loop's holds, return why the node gave way then (the first of
    :data:`_GIVE_WAY` that holds), or None when it did not."""
    return next((reason for hold, reason in _GIVE_WAY if hold in holds), None)


def ending(event: PilotEvent) -> Ending | None:
    """Given a pilot event, return the ending it counts as, or None for events that end no
    pilot (started, paused, resumed) or whose ending was counted when Plancton stopped it."""
    if event.kind in ("stopped", "killed"):
        return _STOP_ENDINGS.get(event.reason, Ending.OTHER)
    if event.kind == "start_failed" or (event.kind == "exited" and event.failed):
        return Ending.FAILED
    if event.kind == "exited" and not event.by_plancton:
        return Ending.FINISHED
    return None


class LedgerReporter:
    """The reporter that keeps the ledger and the history in the state folder.

    Args:
        statedir: the state folder.
        wall: the wall clock, for the local day and the minutes.
    """

    def __init__(self, statedir: str, wall: Callable[[], float] = time.time) -> None:
        self.statedir = statedir
        self.path = ledger.ledger_path(statedir)
        self.wall = wall
        self._lock = threading.Lock()
        self._started = 0
        self._ended: Counter[Ending] = Counter()
        self._last_uptime: float | None = None
        self._problem: str | None = None
        self._keep = True
        self.ledger = self._load()
        self.minutes = history.read_history(statedir)
        self._minute: tuple[float, list[float], list[float]] | None = None

    def configure(self, config: Config) -> None:
        """Nothing to configure: the ledger is always kept."""

    def pilot_event(self, event: PilotEvent) -> None:
        """Count a pilot that started or ended, until the next loop takes the counts."""
        end = ending(event)
        with self._lock:
            self._started += event.kind == "started"
            if end is not None:
                self._ended[end] += 1

    def loop(self, report: LoopReport) -> None:
        """Add what this loop saw to the ledger, write it, and record the minute's CPU."""
        with self._lock:
            started, ended = self._started, dict(self._ended)
            self._started, self._ended = 0, Counter()
        now = self.wall()
        interval = report.uptime_seconds - self._last_uptime if self._last_uptime is not None else 0.0
        self._last_uptime = report.uptime_seconds
        running = report.pilots_by_state.get("running", 0) > 0
        loop = LoopAccount(
            day=datetime.date.fromtimestamp(now),
            interval=interval,
            cpu=CpuReading(*report.pilots_cpu) if report.pilots_cpu else None,
            lending=running,
            partly=running and report.cpu_cap is not None,
            given_way=given_way(report.holds),
            started=started,
            ended=ended,
        )
        self.ledger = ledger.account(self.ledger, loop)
        self._save()
        if report.sample is not None:
            self._record_minute(now, report.sample.owner_cores, report.sample.pilots_cores)

    def all_time(self) -> Day:
        """Return the ledger's totals over every day it keeps (for the metrics)."""
        return self.ledger.total()

    def close(self) -> None:
        """Write the minute under way, so that a restart keeps it."""
        self._close_minute()

    def _load(self) -> Ledger:
        """Read the ledger; a damaged one is kept aside, named in the log, and a new one begun."""
        try:
            return ledger.load(self.path)
        except LedgerError as error:
            aside = f"{self.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            try:
                os.replace(self.path, aside)
            except OSError as moving:
                log.error("%s; it cannot be moved aside (%s): the ledger is not kept", error, moving.strerror)
                self._keep = False  # a damaged file that cannot be moved aside is never written over
                return Ledger()
            log.error("%s; kept as %s, and a new ledger begins", error, aside)
            return Ledger()

    def _save(self) -> None:
        if not self._keep:
            return
        try:
            ledger.save(self.path, self.ledger)
        except LedgerError as error:
            if str(error) != self._problem:
                log.error("%s; the ledger is kept in memory and written when it can be", error)
            self._problem = str(error)
        else:
            self._problem = None

    def _record_minute(self, now: float, owner_cores: float, pilots_cores: float) -> None:
        start = now - now % 60
        if self._minute is not None and self._minute[0] != start:
            self._close_minute()
        if self._minute is None:
            self._minute = (start, [], [])
        self._minute[1].append(owner_cores)
        self._minute[2].append(pilots_cores)

    def _close_minute(self) -> None:
        if self._minute is None:
            return
        start, owner, pilots = self._minute
        self._minute = None
        self.minutes = [*history.last_day(self.minutes, start), (start, _mean(owner), _mean(pilots))]
        try:
            history.write_history(self.statedir, self.minutes)
        except OSError as error:
            log.debug("cannot write the CPU history in %s: %s", self.statedir, error.strerror)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
