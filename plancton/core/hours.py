"""Whether a local time falls in the windows of the week in which pilots may run (``run_hours``).

A span whose end is earlier than its start runs past midnight into the next day, and belongs
to the day it starts on: ``"Fri 22:00-06:00"`` includes Saturday 05:00 but not Friday 05:00.
:mod:`plancton.config.hours` reads the windows from the configuration.

Everything here is pure: the local time is given, never read.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class Window:
    """One window of the week: on these days (0 is Monday), from start to end minute.

    ``end`` is above ``start`` for a span within the day (up to 1440, midnight after), and
    below it for a span that runs past midnight into the next day.
    """

    text: str
    days: frozenset[int]
    start: int = 0
    end: int = MINUTES_PER_DAY

    def contains(self, moment: datetime) -> bool:
        """Given a local time, return whether it falls inside this window."""
        minute = moment.hour * 60 + moment.minute
        today = moment.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        yesterday = (today - 1) % 7
        return (today in self.days and minute >= self.start) or (yesterday in self.days and minute < self.end)


def allowed(windows: tuple[Window, ...], moment: datetime) -> bool:
    """Given the windows and a local time, return whether pilots may run (always, for none)."""
    return not windows or any(window.contains(moment) for window in windows)


def next_change(windows: tuple[Window, ...], moment: datetime) -> datetime | None:
    """Given the windows and a local time, return the next local time at which
    :func:`allowed` changes, or None when it never does (no windows, or the whole week).
    """
    if not windows:
        return None
    now = allowed(windows, moment)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    # the answer can only change at a window's start or end, on one of the next eight days
    candidates = sorted(
        midnight + timedelta(days=day, minutes=minute)
        for day in range(9)
        for window in windows
        for minute in (window.start, window.end)
    )
    for candidate in candidates:
        if candidate > moment and allowed(windows, candidate) != now:
            return candidate
    return None


def describe_moment(moment: datetime, reference: datetime) -> str:
    """Given a local time and the current one, return "18:00" on the same day, else "Mon 18:00"."""
    clock = moment.strftime("%H:%M")
    return clock if moment.date() == reference.date() else f"{DAY_NAMES[moment.weekday()]} {clock}"
