"""Launching the daemon: the part of ``planctonctl`` that starts it.

It needs the engine's client, the metrics senders and python-daemon, so only the verbs that
start the daemon import it (``start``, ``foreground`` and the detached ``_daemon``): every
other verb stays light.
"""

import logging

import daemon as python_daemon

from plancton.cli.output import EXIT_FAILURE, EXIT_OK, complain
from plancton.config.schema import Config
from plancton.control import legacy
from plancton.control.modefiles import write_mode
from plancton.control.paths import Paths
from plancton.control.pidfile import PidFile
from plancton.daemon import logsetup
from plancton.daemon.loop import Daemon
from plancton.engines.docker_api import DockerPilots
from plancton.errors import AlreadyRunning, EnginePermissionDenied, EngineUnavailable
from plancton.metrics.influx_reporter import InfluxReporter
from plancton.metrics.ledger_reporter import LedgerReporter
from plancton.metrics.prometheus import PrometheusReporter
from plancton.metrics.reporting import Reporters

log = logging.getLogger("plancton")


def check_engine(config: Config) -> None:
    """Warn when the container engine does not answer now (the daemon keeps retrying).

    Raises:
        EnginePermissionDenied: this user may not use the engine's socket.
    """
    try:
        DockerPilots(config.instance, config.engine_url).engine_info()
    except EnginePermissionDenied:
        raise
    except EngineUnavailable as error:
        complain(f"warning: {error}; the daemon starts anyway and manages pilots once the engine answers")


def run_daemon(paths: Paths, config: Config, foreground: bool) -> int:
    """Set up logging, take the pidfile and run the loop; return the exit code."""
    logsetup.configure(paths.log_file, foreground=foreground, level=config.log_level)
    pidfile = PidFile(paths.pidfile)
    try:
        pidfile.acquire()
    except AlreadyRunning as error:
        log.info("not starting: %s", error)
        if foreground:
            complain(str(error))
        return EXIT_OK if not foreground else EXIT_FAILURE
    adopt_legacy_mode(paths)
    try:
        # the engine's address is read at start: a reload keeps the engine the daemon began with
        engine = DockerPilots(config.instance, config.engine_url)
        # each reporter does nothing until the configuration names a target, address or file
        ledger = LedgerReporter(paths.statedir)
        influx = InfluxReporter(ledger=ledger.all_time)
        prometheus = PrometheusReporter(influx.sender_stats, ledger.all_time, paths=paths)
        reporter = Reporters(ledger, influx, prometheus)
        return Daemon(paths, config, engine, reporter).run()
    except Exception:
        log.exception("the daemon failed")
        return EXIT_FAILURE
    finally:
        pidfile.release()


def adopt_legacy_mode(paths: Paths) -> None:
    """Read the legacy mode files (Plancton 0.6's) in the run folder once, as the matching mode."""
    try:
        mode, files = legacy.take_legacy_mode(paths.rundir)
        if mode is not None:
            write_mode(paths.rundir, mode)
    except OSError as error:
        log.error("cannot read or replace the original Plancton's mode files in %s: %s", paths.rundir, error)
        return
    if files:
        log.warning("%s", legacy.legacy_mode_message(mode, files, paths.rundir))


def run_detached(paths: Paths, config: Config) -> int:
    """Detach from the terminal and run the daemon (the process that ``start`` launches)."""
    context = python_daemon.DaemonContext(umask=0o022, working_directory="/", signal_map={})
    with context:
        return run_daemon(paths, config, foreground=False)
