"""Reading ``run_hours``: the windows of the week in which pilots may run, from their text.

A window is written as days, a time span, or both: ``"Mon-Fri 18:00-08:00"``, ``"Sat,Sun"``,
``"12:00-14:00"``. Days are ``Mon`` to ``Sun`` (any case), alone, in ranges (``Fri-Mon``
wraps over the week's end) or listed with commas; no days means every day. A span whose end
is earlier than its start runs past midnight into the next day (see
:mod:`plancton.core.hours`). No span means the whole day; ``24:00`` may end a span.
"""

import re
from typing import Any

from plancton.config.units import shown
from plancton.core.hours import DAY_NAMES, MINUTES_PER_DAY, Window

EXAMPLE = '"Mon-Fri 18:00-08:00" or "Sat,Sun"'
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_DAY_INDEX = {name.lower(): index for index, name in enumerate(DAY_NAMES)}


def parse_window(text: str) -> Window:
    """Given one window as text (see the module's docstring), return it.

    Raises:
        ValueError: naming the entry and what is wrong with it.
    """
    parts = text.split()
    if not 1 <= len(parts) <= 2:
        raise ValueError(f"expected a window such as {EXAMPLE}, got {shown(text)}")
    days = frozenset(range(7))
    start, end = 0, MINUTES_PER_DAY
    if _SPAN.match(parts[-1]):
        start, end = _parse_span(parts[-1], text)
        parts = parts[:-1]
    elif len(parts) == 2:
        raise ValueError(f"expected a time span such as 18:00-08:00 in {shown(text)}, got {shown(parts[-1])}")
    if parts:
        days = _parse_days(parts[0], text)
    return Window(text=text, days=days, start=start, end=end)


def parse_windows(value: Any) -> tuple[Window, ...]:
    """Given a list of windows as text, one window, or null (none: always allowed), return them.

    Raises:
        ValueError: for anything but text entries, or for a malformed entry (named).
    """
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"expected a list of windows such as {EXAMPLE}, got {type(value).__name__}")
    windows = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected windows as text such as {EXAMPLE}, got {shown(item)}")
        windows.append(parse_window(item))
    return tuple(windows)


def _parse_span(span: str, text: str) -> tuple[int, int]:
    match = _SPAN.match(span)
    assert match is not None
    start_hour, start_minute, end_hour, end_minute = (int(group) for group in match.groups())
    for hour, minute in ((start_hour, start_minute), (end_hour, end_minute)):
        if minute > 59 or hour > 24 or (hour == 24 and minute):
            raise ValueError(f"expected times from 00:00 to 24:00 in {shown(text)}, got {hour:02d}:{minute:02d}")
    start, end = start_hour * 60 + start_minute, end_hour * 60 + end_minute
    if start == MINUTES_PER_DAY:
        raise ValueError(f"expected a start before 24:00 in {shown(text)}")
    if start == end:
        raise ValueError(f"expected a start and an end that differ in {shown(text)} (use only days for whole days)")
    if end == 0:
        end = MINUTES_PER_DAY
    return start, end


def _parse_days(days: str, text: str) -> frozenset[int]:
    chosen: set[int] = set()
    for item in days.split(","):
        bounds = item.split("-")
        if len(bounds) > 2 or not all(bounds):
            raise ValueError(f"expected days such as Mon-Fri or Sat,Sun in {shown(text)}, got {shown(item)}")
        unknown = [bound for bound in bounds if bound.lower() not in _DAY_INDEX]
        if unknown:
            raise ValueError(f"unknown day {shown(unknown[0])} in {shown(text)}: expected {', '.join(DAY_NAMES)}")
        first, last = (_DAY_INDEX[bound.lower()] for bound in (bounds[0], bounds[-1]))
        chosen.update((first + offset) % 7 for offset in range((last - first) % 7 + 1))
    return frozenset(chosen)
