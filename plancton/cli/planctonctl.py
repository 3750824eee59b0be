"""``planctonctl``: start, stop and steer the Plancton daemon through its pidfile and signals.

Exit codes follow the LSB: ``status`` returns 0 when the daemon runs and 3 when it does not;
``reload`` returns 7 when there is no daemon to reload; usage errors return 2; any other
failure returns 1 with one line naming the cause and the fix.
"""

import argparse
import contextlib
import datetime
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

from plancton import __version__
from plancton.cli import stats
from plancton.cli.output import (
    EXIT_FAILURE,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_RELOAD_NOT_RUNNING,
    complain,
    duration,
    say,
)
from plancton.config import deadline, display, loader, schema, units
from plancton.control import legacy, overview
from plancton.control.ledger import ledger_path
from plancton.control.modefiles import (
    DRAIN_BY_COMMAND,
    cancel_drain_by,
    cancel_snooze,
    request_spawn_now,
    write_drain_by,
    write_mode,
    write_snooze,
)
from plancton.control.node import node_facts
from plancton.control.paths import Paths, location_arguments, prepare, resolve
from plancton.control.pidfile import read_pid, running_pid
from plancton.control.state import read_state
from plancton.core.modes import Mode
from plancton.errors import ConfigError, EnginePermissionDenied, PlanctonError
from plancton.platform.cgroups import PilotCgroup, host_cgroup_version
from plancton.platform.host import systemd_runs

log = logging.getLogger("plancton")

DEFAULT_START_WAIT = 30.0
DEFAULT_STOP_TIMEOUT = 60.0
#: A snooze is for hours; longer absences are what drain is for.
MAX_SNOOZE_SECONDS = 7 * 86400.0

MODE_VERBS = {
    "drain": (Mode.DRAINING, "start no pilot, let the running ones finish"),
    "drain-stop": (Mode.DRAIN_STOP, "drain, then the daemon exits when no pilot is left"),
    "resume": (Mode.ACTIVE, "back to active: keep the pool full on spare CPU"),
    "force-stop": (Mode.FORCE_STOP, "stop every pilot now and start none; the daemon keeps running"),
    "force-start": (Mode.ACTIVE, "back to active and start pilots at once, skipping grace_spawn"),
}


# -- argument parsing ---------------------------------------------------------------------


def add_location_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """Add --user, --confdir, --rundir, --logdir, --pidfile and --statedir to a parser, with this default."""
    parser.add_argument("--user", action="store_true", default=default, help="user mode: folders under ~/.plancton")
    for name, what in (
        ("confdir", "folder of config.yaml"),
        ("rundir", "folder of the pidfile, mode and state"),
        ("logdir", "folder of the log file"),
        ("pidfile", "the pidfile"),
        ("statedir", "folder of what is kept across reboots (the ledger)"),
    ):
        parser.add_argument(f"--{name}", metavar="PATH", default=default, help=what)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of planctonctl's command line."""
    parser = argparse.ArgumentParser(
        prog="planctonctl",
        description="Control the Plancton daemon, which runs pilot containers on spare CPU.",
    )
    parser.add_argument("--version", action="version", version=f"planctonctl (Plancton) {__version__}")
    add_location_options(parser, None)
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    def verb(name: str, summary: str, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=summary, description=summary, aliases=list(aliases))
        add_location_options(sub, argparse.SUPPRESS)
        return sub

    verb("start", "start the daemon in the background").add_argument(
        "--wait", type=float, default=DEFAULT_START_WAIT, metavar="SECONDS", help="how long to wait for it to run"
    )
    verb("stop", "stop the daemon (pilots keep running)").add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT,
        metavar="SECONDS",
        help="how long to wait for a graceful exit before SIGKILL",
    )
    status = verb("status", "say whether the daemon runs, its mode and its pilots")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument(
        "--why", action="store_true", help="print only the reasons for what the daemon did in its last loop"
    )
    verb("foreground", "run attached, logging to stderr (for systemd and debugging)", aliases=("nodaemon",))
    verb("reload", "make the daemon re-read its configuration now")
    for name, (_, summary) in MODE_VERBS.items():
        verb(name, summary)
    drain = verbs.choices["drain"]
    drain.add_argument(
        "--by",
        metavar="TIME",
        help="instead, end lending by TIME (2h, 90m, 2026-12-05T18:00, or with Z or an offset): pilots see it, "
        "start only while they would run drain_min_runtime before it, and are stopped at it",
    )
    snooze = verb("snooze", "pilots give way now, as for a person at the keyboard, and come back when it ends")
    snooze.add_argument(
        "duration", nargs="?", default="1h", help="how long: 30m, 1h, 2h, or seconds such as 5400; default 1h"
    )
    snooze.add_argument("--cancel", action="store_true", help="end the snooze now")
    stats = verb("stats", "what this node lent: CPU, pilots, time lent and given way, from its ledger")
    stats.add_argument("--since", metavar="DATE", help="count from this day: YYYY-MM-DD, today, or 7d (days back)")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON, with every day")
    verb("config", "print the effective configuration and where each value comes from")
    verb("check-config", "validate a configuration file without touching the daemon").add_argument(
        "file", nargs="?", help="the file to check (default: the config.yaml in use)"
    )
    verb("help", "show this help")
    verbs.add_parser("_daemon")  # the detached daemon itself, started by "start"
    # run as root by ./install and at boot where systemd does not run, before the daemon starts
    cgroup = verbs.add_parser("_cgroup")
    cgroup.add_argument("owner", help="the user the daemon runs as")
    cgroup.add_argument("--check", action="store_true", help="only say (exit 0 or 1) whether it is done")
    return parser


def paths_from(args: argparse.Namespace) -> Paths:
    """Return the folders that the command line selects."""
    return resolve(
        user_mode=True if args.user else None,
        confdir=args.confdir,
        rundir=args.rundir,
        logdir=args.logdir,
        pidfile=args.pidfile,
        statedir=args.statedir,
    )


# -- shared steps -------------------------------------------------------------------------


def load_config(path: str, paths: Paths) -> schema.Config:
    """Load and validate a configuration file with the overlays beside it that select this
    node (given the labels in its state folder), printing its warnings.

    Raises:
        ConfigError: the file, an overlay or the labels are invalid.
    """
    config, warnings = loader.load(path, node_facts(paths))
    for warning in warnings:
        complain(f"warning: {warning}")
    return config


def tail(path: str, lines: int = 8) -> list[str]:
    """Return the last lines of a text file (none when unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()[-lines:]
    except OSError:
        return []


def signal_daemon(pid: int, number: int) -> None:
    """Send a signal to the daemon.

    Raises:
        PlanctonError: this user may not signal it.
    """
    try:
        os.kill(pid, number)
    except PermissionError:
        raise PlanctonError(f"not allowed to signal the daemon (pid {pid}): run this as its user or as root") from None
    except ProcessLookupError:
        pass


# -- verbs ----------------------------------------------------------------------------------


def refuse_beside_legacy(paths: Paths) -> None:
    """Refuse to start while a legacy daemon (Plancton 0.6) runs on this host: its
    pidfile in /var/run (root), or the same pidfile as ours (user mode, which 0.6 shared).

    Raises:
        PlanctonError: naming the old daemon and how to stop it.
    """
    own = (paths.pidfile,)
    for pidfile, ignored in ((legacy.LEGACY_PIDFILE, own), (paths.pidfile, ())):
        pid = legacy.running_legacy_daemon(pidfile, own_pidfiles=ignored)
        if pid is not None:
            raise PlanctonError(legacy.legacy_daemon_message(pid, pidfile))


def cmd_start(args: argparse.Namespace, paths: Paths) -> int:
    """Start the daemon in the background; return 0 once it really runs."""
    prepare(paths, daemon=True)
    refuse_beside_legacy(paths)
    pid = running_pid(paths.pidfile)
    if pid is not None:
        say(f"Plancton is already running (pid {pid})")
        return EXIT_OK
    config = load_config(paths.config_file, paths)
    # the engine's client, the metrics senders and python-daemon: only the verbs that start the
    # daemon import them, so that status and the other verbs stay light
    from plancton.cli import launch  # noqa: PLC0415

    launch.check_engine(config)
    command = [sys.executable, "-m", "plancton.cli.planctonctl", *location_arguments(paths), "_daemon"]
    launcher = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=args.wait,
        check=False,
    )
    if launcher.returncode != 0:
        complain(f"the daemon did not start: {launcher.stderr.strip() or f'exit code {launcher.returncode}'}")
        return EXIT_FAILURE
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        pid = running_pid(paths.pidfile)
        state = read_state(paths.state_file)
        if pid is not None and state is not None and state.pid == pid:
            say(f"Plancton started (pid {pid}); log in {paths.log_file}")
            return EXIT_OK
        time.sleep(0.1)
    complain(f"the daemon did not come up within {args.wait:g} s; last lines of {paths.log_file}:")
    for line in tail(paths.log_file):
        print(f"  {line}", file=sys.stderr)
    return EXIT_FAILURE


def cmd_daemon(args: argparse.Namespace, paths: Paths) -> int:
    """Detach and run the daemon (the process that ``start`` launches)."""
    config = load_config(paths.config_file, paths)
    from plancton.cli import launch  # noqa: PLC0415

    return launch.run_detached(paths, config)


def cmd_cgroup(args: argparse.Namespace, paths: Paths) -> int:
    """Create the pilots' parent cgroup with the lowest CPU weight and give it to the user the
    daemon runs as, who could not do either; with ``--check``, return 0 when that is done
    already and 1 when not, changing nothing.

    Only for hosts without systemd (where a slice unit does it), whose engines put pilots in
    cgroups with the cgroupfs driver: the cgroup is made before the engine may run (at boot).

    Raises:
        PlanctonError: systemd runs here, no such user, not root, or the kernel refused.
    """
    config = load_config(paths.config_file, paths)
    if systemd_runs():
        raise PlanctonError("systemd runs here: the pilots' slice unit gives them the idle weight (./install adds it)")
    try:
        account = pwd.getpwnam(args.owner)
    except KeyError:
        raise PlanctonError(f"no user {args.owner} here: name the user the daemon runs as") from None
    cgroup = PilotCgroup(config.instance, "cgroupfs", host_cgroup_version())
    if args.check:
        return EXIT_OK if cgroup.is_handed_over(account.pw_uid) else EXIT_FAILURE
    if os.geteuid() != 0:
        raise PlanctonError(f"only root can give the pilots' cgroup to {args.owner}: run this as root")
    warning = cgroup.set_lowest_weight()
    if warning:
        raise PlanctonError(warning)
    try:
        cgroup.hand_over(account.pw_uid, account.pw_gid)
    except OSError as error:
        raise PlanctonError(f"cannot give {error.filename} to {args.owner}: {error.strerror}") from None
    say(f"pilots' cgroup {cgroup.cpu_folder}: {cgroup.setting}, writable by {args.owner}")
    return EXIT_OK


def cmd_foreground(args: argparse.Namespace, paths: Paths) -> int:
    """Run the daemon attached to the terminal."""
    prepare(paths, daemon=True)
    refuse_beside_legacy(paths)
    config = load_config(paths.config_file, paths)
    from plancton.cli import launch  # noqa: PLC0415

    launch.check_engine(config)
    return launch.run_daemon(paths, config, foreground=True)


def cmd_stop(args: argparse.Namespace, paths: Paths) -> int:
    """Stop the daemon: SIGTERM, then SIGKILL after the timeout. Pilots keep running."""
    pid = running_pid(paths.pidfile)
    if pid is None:
        _remove_stale_pidfile(paths)
        say("Plancton is not running")
        return EXIT_OK
    signal_daemon(pid, signal.SIGTERM)
    how = "gracefully"
    if not _wait_gone(pid, args.timeout):
        signal_daemon(pid, signal.SIGKILL)
        _wait_gone(pid, 10.0)
        how = f"with SIGKILL after {args.timeout:g} s"
    _remove_stale_pidfile(paths)
    say(f"Plancton stopped {how} (pid {pid}); its pilots keep running")
    return EXIT_OK


def _wait_gone(pid: int, timeout: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


def _remove_stale_pidfile(paths: Paths) -> None:
    """Remove a pidfile whose process is gone (a daemon that was killed leaves one)."""
    if read_pid(paths.pidfile) is not None and running_pid(paths.pidfile) is None:
        with contextlib.suppress(OSError):
            os.unlink(paths.pidfile)


def _say_holds(holds: list[str]) -> None:
    if holds:
        say(f"held: {', '.join(holds)}")


def cmd_status(args: argparse.Namespace, paths: Paths) -> int:
    """Print the status; exit 0 when running, 3 when not."""
    data = overview.status_data(paths)
    code = EXIT_OK if data["running"] else EXIT_NOT_RUNNING
    if args.json:
        say(json.dumps(data, indent=2))
        return code
    if not data["running"]:
        say(f"Plancton is not running (mode {data['mode']})")
        return code
    if args.why:
        for reason in data["why"] or ["nothing held back or stopped the pilots in the last loop"]:
            say(reason)
        _say_holds(data["holds"])
        return code
    uptime = duration(data["uptime_seconds"]) if data["uptime_seconds"] is not None else "starting"
    say(f"Plancton is running (pid {data['pid']}, up {uptime}), mode {data['mode']}, instance {data['instance']}")
    say(f"config {data['config_file']} (revision {data['config_revision']}); log {data['log_file']}")
    if data["engine"]:
        say(f"engine {data['engine']}")
    if data["engine_error"]:
        say(f"container engine unavailable: {data['engine_error']}")
    drain_by = data["drain_by"]
    if drain_by:
        say(_deadline_line(drain_by))
    if data["snooze_until"]:
        left = duration(data["snooze_until"] - time.time())
        say(f"snoozed until {time.strftime('%H:%M:%S', time.localtime(data['snooze_until']))} ({left} left)")
    if data["cgroup"]:
        cap = data["cgroup"].get("cap")
        lending = f"; lending {cap} to the owner's host" if cap else ""
        say(f"pilots' cgroup {data['cgroup'].get('parent')} ({data['cgroup'].get('cpu')}{lending})")
    if data["log_error"]:
        say(f"log: {data['log_error']}")
    update = data["config_update"]
    if update:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(update["checked_at"]))
        say(
            f"configuration update {'FAILED' if update['failed'] else update['outcome']} at {when}: {update['message']}"
        )
    if data["revision_trial"]:
        say(data["revision_trial"])
    for reason in data["why"]:
        say(f"why: {reason}")
    _say_holds(data["holds"])
    if data["legacy_pilots"]:
        say(legacy.legacy_pilots_message(data["legacy_pilots"]))
    say(f"{len(data['pilots'])} pilots")
    if data["pilots"]:
        say(f"  {'ID':<12}  {'NAME':<24}  {'STATE':<10}  AGE")
        for pilot in data["pilots"]:
            say(f"  {pilot['id']:<12}  {pilot['name']:<24}  {pilot['state']:<10}  {duration(pilot['age_seconds'])}")
    return code


def _deadline_line(drain_by: dict[str, Any]) -> str:
    """Return what status says of the drain deadline in force."""
    moment = drain_by["deadline"]
    left = moment - time.time()
    when = f"in {duration(left)}" if left > 0 else f"passed {duration(-left)} ago: no pilot runs"
    return f"drain deadline {deadline.shown(moment)} ({when}; set by {drain_by['source']})"


def cmd_reload(args: argparse.Namespace, paths: Paths) -> int:
    """Ask the daemon to re-read its configuration (SIGHUP)."""
    pid = running_pid(paths.pidfile)
    if pid is None:
        complain("Plancton is not running: nothing to reload (start it with planctonctl start)")
        return EXIT_RELOAD_NOT_RUNNING
    signal_daemon(pid, signal.SIGHUP)
    say(f"reload requested (pid {pid}); see {paths.log_file} for the outcome")
    return EXIT_OK


def cmd_mode(args: argparse.Namespace, paths: Paths) -> int:
    """Persist a mode in the run folder and tell the daemon at once (SIGUSR1); ``drain --by``
    sets a drain deadline instead, which resume and force-start cancel."""
    if getattr(args, "by", None):
        return cmd_drain_by(args.by, paths)
    mode, _ = MODE_VERBS[args.verb]
    prepare(paths)
    write_mode(paths.rundir, mode)
    done = f"mode {mode.value} set"
    if mode is Mode.ACTIVE:
        done += _cancel_deadline(paths)
    if args.verb == "force-start":
        request_spawn_now(paths.rundir)
    return tell_daemon(paths, done)


def cmd_drain_by(text: str, paths: Paths) -> int:
    """Persist this node's drain deadline and tell the daemon at once (SIGUSR1)."""
    try:
        moment = deadline.parse_deadline_text(text, time.time())
    except ValueError as error:
        raise PlanctonError(f"drain --by {text!r}: {error}") from None
    prepare(paths)
    write_drain_by(paths.rundir, moment)
    local = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(moment))
    return tell_daemon(
        paths,
        f"drain deadline set: {deadline.shown(moment)} ({local}, in {duration(moment - time.time())}); pilots see it "
        "in $MACHINEFEATURES/shutdowntime, start only while they would run drain_min_runtime before it, and are "
        "stopped at it; planctonctl resume cancels it",
    )


def _cancel_deadline(paths: Paths) -> str:
    """Cancel this node's drain deadline; return what to add to the verb's message (a
    deadline of the configuration stays, and is named)."""
    cancelled = "; drain deadline cancelled" if cancel_drain_by(paths.rundir) else ""
    source = overview.status_data(paths)["drain_by"]
    if source and source["source"] != DRAIN_BY_COMMAND:
        cancelled += f"; the drain deadline drain_by of {source['source']} stays: remove it there"
    return cancelled


def cmd_snooze(args: argparse.Namespace, paths: Paths) -> int:
    """Snooze lending for a while (or end the snooze) and tell the daemon at once (SIGUSR1)."""
    prepare(paths)
    if args.cancel:
        had = cancel_snooze(paths.rundir)
        what = "snooze cancelled: pilots come back" if had else "no snooze was set"
    else:
        seconds = parse_snooze(args.duration)
        until = time.time() + seconds
        write_snooze(paths.rundir, until)
        what = f"snoozed until {time.strftime('%H:%M:%S', time.localtime(until))} ({duration(seconds)})"
    return tell_daemon(paths, what)


def tell_daemon(paths: Paths, what: str) -> int:
    """Wake a running daemon to read the run folder again (SIGUSR1) and say ``what`` was done."""
    pid = running_pid(paths.pidfile)
    if pid is None:
        say(f"{what}; Plancton is not running, so it applies when it starts")
        return EXIT_OK
    signal_daemon(pid, signal.SIGUSR1)
    say(f"{what} (pid {pid} notified)")
    return EXIT_OK


def parse_snooze(text: str) -> float:
    """Given a snooze's duration as typed, return its seconds.

    Raises:
        PlanctonError: not a duration, zero, or longer than :data:`MAX_SNOOZE_SECONDS`.
    """
    try:
        seconds = units.parse_duration(text)
    except ValueError as error:
        raise PlanctonError(f"snooze {text!r}: {error}") from None
    if not 0 < seconds <= MAX_SNOOZE_SECONDS:
        raise PlanctonError(
            f"snooze {text!r}: give a duration above zero and at most {duration(MAX_SNOOZE_SECONDS)} "
            "(for longer, use planctonctl drain)"
        )
    return seconds


def cmd_stats(args: argparse.Namespace, paths: Paths) -> int:
    """Print what the ledger holds: today, this week and all time, or the total since a day."""
    today = datetime.date.today()
    since = stats.parse_since(args.since, today) if args.since else None
    book = overview.read_ledger(paths.statedir)
    if args.json:
        say(json.dumps(overview.stats_data(book, today, since), indent=2))
        return EXIT_OK
    if not book.days:
        say(f"nothing lent yet: the ledger {ledger_path(paths.statedir)} is empty or absent")
        return EXIT_OK
    columns = {f"since {since}": book.total(since)} if since else overview.periods(book, today)
    say(f"what this node lent (ledger {ledger_path(paths.statedir)}, from {min(book.days)})")
    for line in stats.stats_lines(columns):
        say(line)
    return EXIT_OK


def cmd_config(args: argparse.Namespace, paths: Paths) -> int:
    """Print the effective configuration as YAML: every key with its value and whether it comes
    from the file or is the default; passwords are masked. Exit 1 when the file is invalid.
    """
    status = overview.status_data(paths)
    running = status["config_revision"]
    try:
        config = load_config(paths.config_file, paths)
    except ConfigError:
        if running is not None:
            complain(f"the running daemon keeps its last valid configuration (revision {running})")
        raise
    say(f"# {paths.config_file} (revision {config.revision}); max_docks resolves to {config.pool_size} on this host")
    if config.overlays:
        say(f"# with the overlays that select this node, in this order: {', '.join(config.overlays)}")
    if running not in (None, config.revision):
        say(f"# the running daemon still uses revision {running}: reload it (planctonctl reload) to apply this")
    if status["engine"]:
        say(f"# the running daemon's engine: {status['engine']}")
    for name, value, origin in display.describe(config):
        say(f"{name}: {json.dumps(value, ensure_ascii=False)}  # {origin}")
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace, paths: Paths) -> int:
    """Validate a configuration file without touching the daemon; exit 0 when valid, 1 when not.

    Every problem is printed at once; unknown keys are warnings and do not fail the check.
    """
    path = args.file or paths.config_file
    if args.file and not os.path.lexists(path):
        complain(f"{path}: no such file")
        return EXIT_FAILURE
    config = load_config(path, paths)
    defaults = "" if os.path.lexists(path) else "no such file, so the defaults apply; "
    say(f"{path}: valid ({defaults}revision {config.revision}; max_docks resolves to {config.pool_size})")
    return EXIT_OK


def cmd_help(args: argparse.Namespace, paths: Paths) -> int:
    """Print the usage."""
    build_parser().print_help()
    return EXIT_OK


VERBS: dict[str, Callable[[argparse.Namespace, Paths], int]] = {
    "start": cmd_start,
    "stop": cmd_stop,
    "status": cmd_status,
    "foreground": cmd_foreground,
    "nodaemon": cmd_foreground,
    "reload": cmd_reload,
    "stats": cmd_stats,
    "snooze": cmd_snooze,
    "config": cmd_config,
    "check-config": cmd_check_config,
    "help": cmd_help,
    "_daemon": cmd_daemon,
    "_cgroup": cmd_cgroup,
    **{name: cmd_mode for name in MODE_VERBS},
}


def main(argv: list[str] | None = None) -> int:
    """Run planctonctl with the given arguments; return the exit code."""
    args = build_parser().parse_args(argv)
    for name in ("user", "confdir", "rundir", "logdir", "pidfile", "statedir"):
        if not hasattr(args, name):
            setattr(args, name, None)
    try:
        return VERBS[args.verb](args, paths_from(args))
    except ConfigError as error:
        complain(error.describe())
        return EXIT_FAILURE
    except EnginePermissionDenied as error:
        complain(str(error))
        return EXIT_FAILURE
    except PlanctonError as error:
        complain(str(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
