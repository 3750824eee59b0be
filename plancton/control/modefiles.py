"""The daemon's mode and its persistence in the run folder (standard library only).

A mode is written by ``planctonctl`` and read by the daemon, so it survives a restart of
either. The file holds one line: the mode's name. A snooze is kept beside it: one line, the
Unix time at which it ends; and so is a drain deadline set by ``planctonctl drain --by``.
"""

import math
import os

from plancton.control.files import write_private_file
from plancton.core.modes import Mode

MODE_FILE = "mode"
SPAWN_NOW_FILE = "spawn-now"
SNOOZE_FILE = "snooze"
DRAIN_BY_FILE = "drain-by"
#: Who set a drain deadline kept in the run folder, as status names it.
DRAIN_BY_COMMAND = "planctonctl drain --by"


def read_mode(rundir: str) -> Mode:
    """Given the run folder, return the persisted mode (active when none or unreadable)."""
    try:
        with open(os.path.join(rundir, MODE_FILE), encoding="utf-8") as handle:
            return Mode(handle.read().strip())
    except (OSError, ValueError):
        return Mode.ACTIVE


def write_mode(rundir: str, mode: Mode) -> None:
    """Persist a mode in the run folder, atomically (a reader sees the old or the new one).

    Raises:
        OSError: the run folder is not writable.
    """
    write_private_file(os.path.join(rundir, MODE_FILE), mode.value + "\n")


def request_spawn_now(rundir: str) -> None:
    """Ask the daemon to start pilots at once, skipping grace_spawn (consumed by the daemon)."""
    write_private_file(os.path.join(rundir, SPAWN_NOW_FILE), "1\n")


def take_spawn_now(rundir: str) -> bool:
    """Return whether a start-at-once request was pending, and consume it."""
    return _remove(rundir, SPAWN_NOW_FILE)


def write_snooze(rundir: str, until: float) -> None:
    """Persist a snooze ending at ``until`` (Unix seconds) in the run folder, atomically.

    Raises:
        OSError: the run folder is not writable.
    """
    _write_moment(rundir, SNOOZE_FILE, until)


def cancel_snooze(rundir: str) -> bool:
    """Remove the snooze; return whether there was one."""
    return _remove(rundir, SNOOZE_FILE)


def read_snooze(rundir: str) -> float | None:
    """Given the run folder, return when the snooze ends (Unix seconds), or None for none.

    A snooze already over is still returned: the reader compares it with its own clock.
    """
    return _read_moment(rundir, SNOOZE_FILE)


def write_drain_by(rundir: str, deadline: float) -> None:
    """Persist this node's drain deadline (Unix seconds, ``planctonctl drain --by``), atomically.

    Raises:
        OSError: the run folder is not writable.
    """
    _write_moment(rundir, DRAIN_BY_FILE, deadline)


def cancel_drain_by(rundir: str) -> bool:
    """Remove this node's drain deadline; return whether there was one."""
    return _remove(rundir, DRAIN_BY_FILE)


def read_drain_by(rundir: str) -> float | None:
    """Given the run folder, return this node's drain deadline (Unix seconds), or None for
    none; a deadline that passed is still returned (it holds until cancelled)."""
    return _read_moment(rundir, DRAIN_BY_FILE)


def _write_moment(rundir: str, name: str, moment: float) -> None:
    write_private_file(os.path.join(rundir, name), f"{moment!r}\n")


def _remove(rundir: str, name: str) -> bool:
    try:
        os.unlink(os.path.join(rundir, name))
    except FileNotFoundError:
        return False
    return True


def _read_moment(rundir: str, name: str) -> float | None:
    try:
        with open(os.path.join(rundir, name), encoding="utf-8") as handle:
            moment = float(handle.read().strip())
    except (OSError, ValueError):
        return None
    return moment if math.isfinite(moment) else None
