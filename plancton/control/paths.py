"""Where Plancton keeps its configuration, state and logs, in root mode and in user mode."""

import contextlib
import os
import stat
from dataclasses import dataclass

from plancton.errors import PlanctonError

CONFIG_NAME = "config.yaml"
STATE_NAME = "state.json"
LOG_NAME = "plancton.log"
PID_NAME = "plancton.pid"


@dataclass(frozen=True)
class Paths:
    """The folders and files of one Plancton installation."""

    confdir: str
    rundir: str
    logdir: str
    pidfile: str
    user_mode: bool
    #: what is kept across reboots (the ledger)
    statedir: str

    @property
    def config_file(self) -> str:
        """The configuration file."""
        return os.path.join(self.confdir, CONFIG_NAME)

    @property
    def state_file(self) -> str:
        """The state the daemon writes at each loop, read by ``planctonctl status``."""
        return os.path.join(self.rundir, STATE_NAME)

    @property
    def log_file(self) -> str:
        """The rotating log file."""
        return os.path.join(self.logdir, LOG_NAME)


def resolve(
    user_mode: bool | None = None,
    confdir: str | None = None,
    rundir: str | None = None,
    logdir: str | None = None,
    pidfile: str | None = None,
    statedir: str | None = None,
) -> Paths:
    """Return the paths: root mode for root unless ``user_mode``; overrides win.

    Root mode uses /etc/plancton, /var/run/plancton, /var/log/plancton and /var/lib/plancton;
    user mode ~/.plancton/{conf,run,log,state}.
    """
    if user_mode is None:
        user_mode = os.geteuid() != 0
    if user_mode:
        home = os.path.join(os.path.expanduser("~"), ".plancton")
        defaults = tuple(os.path.join(home, name) for name in ("conf", "run", "log", "state"))
    else:
        defaults = ("/etc/plancton", "/var/run/plancton", "/var/log/plancton", "/var/lib/plancton")
    run = os.path.abspath(rundir or defaults[1])
    return Paths(
        confdir=os.path.abspath(confdir or defaults[0]),
        rundir=run,
        logdir=os.path.abspath(logdir or defaults[2]),
        pidfile=os.path.abspath(pidfile or os.path.join(run, PID_NAME)),
        user_mode=user_mode,
        statedir=os.path.abspath(statedir or defaults[3]),
    )


def prepare(paths: Paths, daemon: bool = False) -> None:
    """Create the run and log folders, the state folder too for a daemon (``daemon``), and in
    user mode the configuration folder (0700 in user mode), and check they are safe to use.

    Raises:
        PlanctonError: a folder cannot be created or written, or is writable by others.
    """
    mode = 0o700 if paths.user_mode else 0o755
    if paths.user_mode and not os.path.exists(paths.confdir):
        # where config.yaml goes; only created, since it only needs to be readable
        with contextlib.suppress(OSError):
            os.makedirs(paths.confdir, mode=0o700)
    state = [paths.statedir] if daemon else []
    for folder in (paths.rundir, paths.logdir, os.path.dirname(paths.pidfile), *state):
        try:
            os.makedirs(folder, mode=mode, exist_ok=True)
        except OSError as error:
            raise PlanctonError(
                f"cannot create {folder}: {error.strerror}; create it and make it writable for this user, "
                "or choose another folder with --rundir/--logdir/--pidfile/--statedir"
            ) from None
        check_private_folder(folder)


def check_private_folder(folder: str) -> None:
    """Refuse a folder for control files if others may write to it or it is not writable.

    Raises:
        PlanctonError: naming the folder and the fix.
    """
    info = os.stat(folder)
    if info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and info.st_uid != os.geteuid()):
        raise PlanctonError(
            f"refusing {folder}: other users may write to it, so they could plant files there; "
            f"use a private folder (chmod go-w {folder}) or choose another with --rundir/--logdir/--pidfile"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PlanctonError(
            f"{folder} is not writable by this user; fix its owner or choose another folder "
            "with --rundir/--logdir/--pidfile (or --user for user mode)"
        )


def location_arguments(paths: Paths) -> list[str]:
    """Return the options that give another planctonctl (or plancton-bootstrap) process the
    same folders."""
    arguments = ["--confdir", paths.confdir, "--rundir", paths.rundir, "--logdir", paths.logdir]
    arguments += ["--pidfile", paths.pidfile, "--statedir", paths.statedir]
    return arguments + (["--user"] if paths.user_mode else [])
