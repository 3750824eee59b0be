"""The daemon's modes and their persistence in the run folder (standard library only).

A mode is written by ``planctonctl`` and read by the daemon, so it survives a restart of
either. The file holds one line: the mode's name.
"""

import contextlib
import enum
import os

MODE_FILE = "mode"
SPAWN_NOW_FILE = "spawn-now"


class Mode(enum.Enum):
    """What the daemon is asked to do with its pilots."""

    ACTIVE = "active"  # keep the pool full on spare CPU
    DRAINING = "draining"  # start nothing, let pilots finish
    DRAIN_STOP = "drain-stop"  # drain, then the daemon exits when no pilot is left
    FORCE_STOP = "force-stop"  # stop every pilot now, start nothing, keep running


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
    try:
        os.unlink(os.path.join(rundir, SPAWN_NOW_FILE))
    except FileNotFoundError:
        return False
    return True


def write_private_file(path: str, text: str, mode: int = 0o644) -> None:
    """Write text to path atomically, never following a symlink planted at the temporary name.

    Raises:
        OSError: the folder is not writable.
    """
    temporary = f"{path}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    descriptor = os.open(temporary, flags, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
