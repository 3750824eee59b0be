"""``planctonctl stats``: what this node lent, from its ledger, for people and as JSON."""

import datetime
import re

from plancton.cli.output import duration
from plancton.control.ledger import Day, Ending, GiveWay
from plancton.errors import PlanctonError

_DAYS_AGO = re.compile(r"^(\d+)d$")


def parse_since(text: str, today: datetime.date) -> datetime.date:
    """Given ``--since`` (a date as YYYY-MM-DD, ``today``, or ``Nd`` for N days back) and
    today's date, return the first day to count.

    Raises:
        PlanctonError: the text is none of those.
    """
    if text == "today":
        return today
    days_ago = _DAYS_AGO.match(text)
    if days_ago:
        return today - datetime.timedelta(days=int(days_ago.group(1)))
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise PlanctonError(
            f"--since {text!r} is not a date: give YYYY-MM-DD (2026-12-01), today, or a number of days back (7d)"
        ) from None


def stats_lines(columns: dict[str, Day]) -> list[str]:
    """Given named totals (a column each), return the table ``stats`` prints."""
    rows: list[tuple[str, list[str]]] = [
        ("CPU core-hours", [f"{day.cpu_seconds / 3600:.2f}" for day in columns.values()]),
        ("time lent", [duration(day.lent_seconds) for day in columns.values()]),
        ("  of it, in part", [duration(day.partly_lent_seconds) for day in columns.values()]),
        ("pilots started", [str(day.started) for day in columns.values()]),
    ]
    rows += [
        (f"  ended: {ending.value}", [str(day.ended.get(ending.value, 0)) for day in columns.values()])
        for ending in Ending
    ]
    rows += [
        (
            f"gave way: {reason.value}",
            [duration(day.given_way_seconds.get(reason.value, 0.0)) for day in columns.values()],
        )
        for reason in GiveWay
    ]
    width = max(len(label) for label, _ in rows)
    header = f"{'':<{width}}" + "".join(f"  {name.replace('_', ' '):>12}" for name in columns)
    return [header] + [f"{label:<{width}}" + "".join(f"  {value:>12}" for value in values) for label, values in rows]
