"""What legacy Plancton (0.6, Python 2) leaves on a host, recognised.

A site moving to this Plancton is told about it (standard library and psutil only).

- Its daemon wrote its pid to ``/var/run/plancton.pid`` (root) or
  ``~/.plancton/run/plancton.pid`` (user mode) and ran as ``planctonctl start`` under
  Python 2. Two daemons on one host would both fill it with pilots.
- Its ``planctonctl`` kept the mode as empty files in the run folder: ``drain`` (start no
  pilot), ``drain`` with ``stop`` (drain, then exit once no pilot is left) and ``force-stop``
  (stop every pilot now; that ``planctonctl force-stop`` then stopped the daemon too).
- Its pilots are named ``plancton-worker-XXXXXX`` and carry no label.
"""

import contextlib
import os
from collections.abc import Mapping
from typing import Any

import psutil

from plancton.control.pidfile import read_pid
from plancton.core.modes import Mode

#: The legacy pidfile when run by root.
LEGACY_PIDFILE = "/var/run/plancton.pid"
#: The legacy mode files, in its run folder (the same folder as ours by default).
LEGACY_DRAIN_FILE = "drain"
LEGACY_STOP_FILE = "stop"
LEGACY_FORCE_STOP_FILE = "force-stop"
#: The prefix of the names of legacy pilots.
LEGACY_PILOT_PREFIX = "plancton-worker-"
#: The label every pilot of ours carries (the same as :data:`plancton.engines.spec.LABEL_INSTANCE`).
INSTANCE_LABEL = "org.plancton.instance"


def running_legacy_daemon(pidfile: str = LEGACY_PIDFILE, own_pidfiles: tuple[str, ...] = ()) -> int | None:
    """Given the legacy pidfile, return the pid of the legacy daemon running, or None.

    A pid counts only when its process is alive, is not this process or its parent, is not
    the daemon named by one of ``own_pidfiles`` (ours), and it is the legacy daemon
    by :func:`is_legacy_process`. Never raises.
    """
    pid = read_pid(pidfile)
    if pid is None or pid in (os.getpid(), os.getppid()) or pid in {read_pid(path) for path in own_pidfiles}:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        command_line = process.cmdline()
    except (psutil.Error, OSError):
        return None
    try:
        executable = process.exe()
    except (psutil.Error, OSError):
        executable = ""  # another user's process: its command line has to do
    return pid if is_legacy_process(command_line, executable) else None


def is_legacy_process(command_line: list[str], executable: str = "") -> bool:
    """Given a process's arguments and its resolved executable ("" when unknown), return
    whether it is the legacy daemon (``python2 /usr/bin/planctonctl start``),
    not this Plancton's, which runs under Python 3 from its ``plancton.cli`` package.
    """
    text = " ".join(command_line)
    if "plancton" not in text:
        return False
    if any(marker in text for marker in ("plancton.cli", "plancton/cli", "/opt/plancton/venv/")):
        return False
    # legacy Plancton needs Python 2; ours needs Python 3
    interpreter = os.path.basename(executable or (command_line[0] if command_line else ""))
    return not interpreter.startswith("python3")


def take_legacy_mode(rundir: str) -> tuple[Mode | None, list[str]]:
    """Given a run folder, return the mode the legacy mode files there asked for (None
    when there are none) and the files found; the files are removed, so that the mode is
    taken once. ``force-stop`` wins over ``drain`` with ``stop`` (drain-stop), which wins
    over ``drain`` alone; a ``stop`` without ``drain`` meant nothing to legacy Plancton.

    Raises:
        OSError: a file is there but cannot be removed (the run folder is read-only).
    """
    names = (LEGACY_FORCE_STOP_FILE, LEGACY_DRAIN_FILE, LEGACY_STOP_FILE)
    found = [name for name in names if os.path.isfile(os.path.join(rundir, name))]
    for name in found:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(rundir, name))
    if LEGACY_FORCE_STOP_FILE in found:
        return Mode.FORCE_STOP, found
    if LEGACY_DRAIN_FILE in found:
        return (Mode.DRAIN_STOP if LEGACY_STOP_FILE in found else Mode.DRAINING), found
    return None, found


def is_legacy_pilot(entry: Mapping[str, Any]) -> bool:
    """Given one entry of a Docker container listing (``GET /containers/json``: ``Names``,
    ``Labels``), return whether it is a legacy pilot: a name starting with
    ``plancton-worker-`` and no Plancton instance label.
    """
    labels = entry.get("Labels") or {}
    if INSTANCE_LABEL in labels:
        return False
    names = entry.get("Names") or []
    return any(str(name).lstrip("/").startswith(LEGACY_PILOT_PREFIX) for name in names)


def legacy_daemon_message(pid: int, pidfile: str = LEGACY_PIDFILE) -> str:
    """Return the line to print when the legacy daemon runs (pid from ``pidfile``)."""
    return (
        f"the original Plancton (0.6) is running as pid {pid} ({pidfile}): stop it first with its own "
        f"planctonctl stop (or kill {pid}), then remove its crontab @reboot line and {pidfile}"
    )


def legacy_mode_message(mode: Mode | None, files: list[str], rundir: str) -> str:
    """Return the line to log when the legacy mode files were taken from ``rundir``."""
    found = ", ".join(os.path.join(rundir, name) for name in files)
    if mode is None:
        return f"removed the original Plancton's {found}, which asked for nothing without a drain file"
    return f"the original Plancton's {found} asked for {mode.value}: mode set to it (planctonctl resume undoes it)"


def legacy_pilots_message(names: list[str]) -> str:
    """Return the line to print when legacy pilots are on the host."""
    shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{len(names)} pilot(s) of the original Plancton (0.6) are on this host and are not managed: {shown}; "
        "they are left alone; set legacy_pilots: remove to have them stopped (vacate_time) and removed"
    )
