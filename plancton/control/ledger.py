"""The contribution ledger: what this node lent, day by day, kept across restarts and reboots.

The ledger is a small JSON file in the state folder, written again atomically after every
loop, so that a daemon killed at any moment loses at most the loop under way and never counts
anything twice:

- CPU time comes from the pilots' parent cgroup, whose counter keeps the CPU time of pilots
  already gone. The ledger keeps the last reading together with what identifies the counter
  (the boot and the cgroup folder): a reading of the same counter adds its growth; one of a
  new counter (after a reboot, or once the daemon removed an empty parent) adds all of it,
  since that cgroup was made after the last reading.
- Pilots started, how each ended, the time lent and the time given way by reason come from
  the loop that saw them.

Days are the host's local dates; days older than :data:`KEEP_DAYS` are dropped, so the file
stays bounded (about 200 bytes a day).
"""

import dataclasses
import datetime
import enum
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plancton.control.files import write_private_file
from plancton.errors import PlanctonError

LEDGER_NAME = "ledger.json"
FORMAT_VERSION = 1
#: Days kept: a year and a month, so that a year back from any day of this one is there.
KEEP_DAYS = 400


class Ending(enum.StrEnum):
    """How a pilot ended, as the ledger counts it."""

    FINISHED = "finished"  # exited by itself after running
    OWNER = "owner"  # stopped because the owner needed the host
    TTL = "ttl"  # stopped at max_ttl
    MEMORY = "memory"  # killed because memory ran short
    FAILED = "failed"  # refused by the engine, never ran, or exited at once
    OTHER = "other"  # stopped by force-stop, a drain deadline or an image change


class GiveWay(enum.StrEnum):
    """Why the node held its pilots back (paused, stopped or not started) for a while."""

    CPU = "cpu"  # the owner's processes needed the CPU
    KEYBOARD = "keyboard"  # a person at the keyboard
    BATTERY = "battery"  # running on battery
    HOURS = "hours"  # outside run_hours
    SNOOZE = "snooze"  # the owner snoozed lending
    DRAIN = "drain"  # drained or force-stopped by the node's admin
    MEMORY = "memory"  # memory ran short


class LedgerError(PlanctonError):
    """The ledger file cannot be read or written."""


@dataclass(frozen=True)
class CpuReading:
    """One reading of the pilots' CPU counter.

    Args:
        source: what identifies the counter (the boot and the cgroup folder); a different
            source is a counter that started again from zero.
        seconds: the CPU seconds it holds.
    """

    source: str
    seconds: float


#: The mark of a ledger that began while no counter could be read (a systemd slice appears
#: only with the first pilot; the parent is made once the engine answers): a counter read later
#: was made since, and adds all it holds.
NO_COUNTER = CpuReading("", 0.0)


@dataclass
class Day:
    """What the node gave in one day."""

    cpu_seconds: float = 0.0
    started: int = 0
    ended: dict[str, int] = field(default_factory=dict)
    lent_seconds: float = 0.0
    #: the part of lent_seconds during which pilots lent part of the host to a present or
    #: busy owner (lend_cores)
    partly_lent_seconds: float = 0.0
    given_way_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, other: "Day") -> None:
        """Add another day's figures to this one."""
        self.cpu_seconds += other.cpu_seconds
        self.started += other.started
        self.lent_seconds += other.lent_seconds
        self.partly_lent_seconds += other.partly_lent_seconds
        for name, count in other.ended.items():
            self.ended[name] = self.ended.get(name, 0) + count
        for name, seconds in other.given_way_seconds.items():
            self.given_way_seconds[name] = self.given_way_seconds.get(name, 0.0) + seconds


@dataclass(frozen=True)
class LoopAccount:
    """What one loop adds to the ledger.

    Args:
        day: the host's local date of the loop.
        interval: seconds since the previous loop's account (0 for the daemon's first loop).
        cpu: the pilots' CPU counter now, or None when it cannot be read.
        lending: whether a pilot ran during the interval.
        partly: whether they ran under a cap, lending part of the host to its owner.
        given_way: why pilots were held back during the interval, or None.
        started: pilots started since the previous account.
        ended: pilots ended since the previous account, by how.
    """

    day: datetime.date
    interval: float = 0.0
    cpu: CpuReading | None = None
    lending: bool = False
    partly: bool = False
    given_way: GiveWay | None = None
    started: int = 0
    ended: Mapping[Ending, int] = field(default_factory=dict)


@dataclass
class Ledger:
    """Every day's figures and the last reading of the pilots' CPU counter."""

    days: dict[str, Day] = field(default_factory=dict)
    cpu_mark: CpuReading | None = None

    def total(self, since: datetime.date | None = None) -> Day:
        """Return the sum of the days from ``since`` on (every day when None)."""
        first = since.isoformat() if since else ""
        total = Day()
        for name, day in self.days.items():
            if name >= first:
                total.add(day)
        return total


def account(ledger: Ledger, loop: LoopAccount) -> Ledger:
    """Given the ledger and one loop's account, return the ledger with the loop added.

    The CPU counter's growth since the last reading of the same counter is added; a counter
    seen for the first time adds all it holds, except in a ledger whose first loop read it (it
    then starts counting from this reading, not from whatever came before it; a first loop
    that could read no counter marks :data:`NO_COUNTER`, so that the first pilots' seconds
    count). Days older than :data:`KEEP_DAYS` before this loop's day are dropped.
    """
    days = dict(ledger.days)
    today = Day()
    today.add(days.get(loop.day.isoformat(), Day()))  # a copy: the ledger given is left as it is
    days[loop.day.isoformat()] = today
    today.cpu_seconds += _cpu_growth(ledger.cpu_mark, loop.cpu)
    interval = max(0.0, loop.interval)
    if loop.lending:
        today.lent_seconds += interval
        today.partly_lent_seconds += interval if loop.partly else 0.0
    if loop.given_way is not None:
        reason = loop.given_way.value
        today.given_way_seconds[reason] = today.given_way_seconds.get(reason, 0.0) + interval
    today.started += loop.started
    for ending, count in loop.ended.items():
        today.ended[ending.value] = today.ended.get(ending.value, 0) + count
    oldest = (loop.day - datetime.timedelta(days=KEEP_DAYS)).isoformat()
    kept = {name: day for name, day in days.items() if name > oldest}
    return Ledger(days=kept, cpu_mark=loop.cpu or ledger.cpu_mark or NO_COUNTER)


def _cpu_growth(mark: CpuReading | None, reading: CpuReading | None) -> float:
    if reading is None or mark is None:
        return 0.0
    if reading.source == mark.source and reading.seconds >= mark.seconds:
        return reading.seconds - mark.seconds
    return reading.seconds


def ledger_path(statedir: str) -> str:
    """Return the ledger file's path in a state folder."""
    return os.path.join(statedir, LEDGER_NAME)


def load(path: str) -> Ledger:
    """Given the ledger file's path, return the ledger (an empty one when there is no file).

    Raises:
        LedgerError: the file cannot be read or is not a ledger; its text is left as it is.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return Ledger()
    except OSError as error:
        raise LedgerError(f"cannot read the ledger {path}: {error.strerror}") from None
    except ValueError as error:
        raise LedgerError(f"the ledger {path} is not valid JSON ({error})") from None
    try:
        return _from_data(data)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise LedgerError(f"the ledger {path} is not a ledger of this version ({error})") from None


def _from_data(data: Any) -> Ledger:
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
    mark = data.get("cpu_mark")
    days = {}
    for name, day in data["days"].items():
        datetime.date.fromisoformat(name)
        days[name] = Day(
            cpu_seconds=float(day.get("cpu_seconds", 0.0)),
            started=int(day.get("started", 0)),
            ended={str(key): int(value) for key, value in day.get("ended", {}).items()},
            lent_seconds=float(day.get("lent_seconds", 0.0)),
            partly_lent_seconds=float(day.get("partly_lent_seconds", 0.0)),
            given_way_seconds={str(key): float(value) for key, value in day.get("given_way_seconds", {}).items()},
        )
    reading = CpuReading(str(mark["source"]), float(mark["seconds"])) if mark else None
    return Ledger(days=days, cpu_mark=reading)


def save(path: str, ledger: Ledger) -> None:
    """Write the ledger atomically: a reader, or a daemon killed meanwhile, sees the old or
    the new file whole.

    Raises:
        LedgerError: the folder is not writable.
    """
    data = {
        "version": FORMAT_VERSION,
        "cpu_mark": dataclasses.asdict(ledger.cpu_mark) if ledger.cpu_mark else None,
        "days": {name: dataclasses.asdict(day) for name, day in sorted(ledger.days.items())},
    }
    try:
        write_private_file(path, json.dumps(data, separators=(",", ":")) + "\n")
    except OSError as error:
        raise LedgerError(f"cannot write the ledger {path}: {error.strerror}") from None
