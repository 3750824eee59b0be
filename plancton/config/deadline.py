"""Drain deadlines: the ``drain_by`` key, and the time ``planctonctl drain --by`` is given.

A deadline is a moment in Unix seconds, as the HEP machine-features file ``shutdowntime``
holds it. The configuration's must be absolute and say its time zone (a farm's nodes may
run in several); on the command line a duration from now, or a local time, will do.
"""

import datetime
import math
from typing import Any

from plancton.config import units

#: How a deadline is shown in messages, and by ``planctonctl config``.
SHOWN_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_CONFIG_EXAMPLE = '"2026-12-05T18:00:00Z" or "2026-12-05T19:00:00+01:00"'
_COMMAND_EXAMPLE = "2h, 90m, or a time such as 2026-12-05T18:00 (local) or 2026-12-05T18:00:00Z"


def shown(moment: float) -> str:
    """Given a deadline in Unix seconds, return it as an ISO time in UTC."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime(SHOWN_FORMAT)


def parse_drain_by(value: Any) -> float | None:
    """Given the YAML value of ``drain_by``, return the deadline in Unix seconds (None: none).

    Accepted: an ISO time with its time zone (YAML may read an unquoted one as a timestamp
    already), or Unix seconds. Whether it is still ahead is for the reader's clock to say.

    Raises:
        ValueError: anything else, a time without its zone among it.
    """
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"expected an ISO time with its time zone such as {_CONFIG_EXAMPLE}, got {value}")
        return float(value)
    moment = _iso_time(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime.datetime):
        raise ValueError(
            f"expected an ISO time with its time zone such as {_CONFIG_EXAMPLE}, got {units.shown(str(value))}"
        )
    if moment.tzinfo is None:
        raise ValueError(
            f"expected a time zone in the time (a farm's nodes may be in several), such as {_CONFIG_EXAMPLE}, "
            f"got {units.shown(str(value))}; add Z for UTC or the offset"
        )
    return moment.timestamp()


def parse_deadline_text(text: str, now: float) -> float:
    """Given a deadline as typed on the command line and the time now (Unix seconds), return
    the deadline in Unix seconds: a duration from now (2h, 90m, 5400) or an ISO time, read in
    local time unless it says its zone.

    Raises:
        ValueError: not a duration or a time, or not after ``now``.
    """
    try:
        moment = now + units.parse_duration(text)
    except ValueError:
        parsed = _iso_time(text)
        if parsed is None:
            raise ValueError(f"expected {_COMMAND_EXAMPLE}, got {units.shown(text)}") from None
        moment = parsed.timestamp()  # a naive time is local time
    if moment <= now:
        raise ValueError(f"{units.shown(text)} is not ahead of now ({shown(now)}); give a later time, such as 2h")
    return moment


def _iso_time(text: str) -> datetime.datetime | None:
    """Return the ISO time in ``text`` (with a date), or None when it is none."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if "T" in text or " " in text.strip() else None
