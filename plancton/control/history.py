"""The last day of the owner's CPU against the pilots', minute by minute, in the state folder.

The file (``history.json``) holds ``{"version": 1, "minutes": [[start, owner_cores,
pilots_cores], ...]}``, oldest first, one entry per minute the daemon ran (``start`` in Unix
seconds), at most :data:`KEEP_MINUTES`; the daemon writes it whole when a minute ends, and the
owner's page draws it.
"""

import json
import math
import os

from plancton.control.files import write_private_file

HISTORY_NAME = "history.json"
FORMAT_VERSION = 1
KEEP_MINUTES = 24 * 60

#: One minute: when it began (Unix seconds), the owner's and the pilots' mean CPU in cores.
Minute = tuple[float, float, float]


def history_path(statedir: str) -> str:
    """Return the history file's path in a state folder."""
    return os.path.join(statedir, HISTORY_NAME)


def read_history(statedir: str) -> list[Minute]:
    """Given the state folder, return its minutes, oldest first (none when the file is missing
    or damaged: the history only serves a chart)."""
    try:
        with open(history_path(statedir), encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("version") != FORMAT_VERSION:
            return []
        minutes = [(float(start), float(owner), float(pilots)) for start, owner, pilots in data["minutes"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []
    return [minute for minute in minutes if all(math.isfinite(value) for value in minute)][-KEEP_MINUTES:]


def write_history(statedir: str, minutes: list[Minute]) -> None:
    """Write the last :data:`KEEP_MINUTES` minutes atomically.

    Raises:
        OSError: the state folder is not writable.
    """
    rows = [[start, round(owner, 3), round(pilots, 3)] for start, owner, pilots in minutes[-KEEP_MINUTES:]]
    write_private_file(history_path(statedir), json.dumps({"version": FORMAT_VERSION, "minutes": rows}) + "\n")


def last_day(minutes: list[Minute], now: float) -> list[Minute]:
    """Given minutes and the time now, return those of the last 24 hours."""
    return [minute for minute in minutes if now - minute[0] < KEEP_MINUTES * 60]
