"""The owner's and the pilots' CPU minute by minute over the last day, as the page charts it.

The daemon keeps ``history.json`` in the state folder::

    {"version": 1, "minutes": [[unix_minute_start, owner_cores, pilots_cores], ...]}

oldest first, at most :data:`MAX_MINUTES` entries: each minute's average CPU cores used by
anything but the pilots (the owner) and by the pilots. This module reads it.
"""

import json
import math
import os
from typing import Any

from plancton.errors import PlanctonError

HISTORY_NAME = "history.json"
FORMAT_VERSION = 1
#: A day of minutes.
MAX_MINUTES = 1440

#: One minute: (its start in Unix seconds, the owner's CPU cores, the pilots' CPU cores).
Minute = tuple[float, float, float]


class HistoryError(PlanctonError):
    """The history file cannot be read or is not a history of this version."""


def history_path(statedir: str) -> str:
    """Return the history file's path in a state folder."""
    return os.path.join(statedir, HISTORY_NAME)


def read_history(statedir: str) -> list[Minute]:
    """Given the state folder, return its minutes, oldest first, at most :data:`MAX_MINUTES`
    (the newest); none when the daemon never wrote the file.

    Raises:
        HistoryError: the file cannot be read, is not JSON, or holds something else than a
            history of this version (naming the file and what is wrong).
    """
    path = history_path(statedir)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return []
    except OSError as error:
        raise HistoryError(f"cannot read the CPU history {path}: {error.strerror}") from None
    except ValueError as error:
        raise HistoryError(f"the CPU history {path} is not valid JSON ({error})") from None
    try:
        minutes = _minutes(data)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise HistoryError(f"the CPU history {path} is not a history of this version ({error})") from None
    return sorted(minutes)[-MAX_MINUTES:]


def _minutes(data: Any) -> list[Minute]:
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
    minutes = []
    for entry in data["minutes"]:
        start, owner, pilots = (float(value) for value in entry)
        if not all(math.isfinite(value) and value >= 0 for value in (start, owner, pilots)):
            raise ValueError(f"minute {entry!r}: expected a start and two CPU figures, finite and not negative")
        minutes.append((start, owner, pilots))
    return minutes
