"""The daemon's loop: sense, decide, act, report; with modes, reload and signals.

Signal handlers only record the signal and wake the loop (:mod:`plancton.daemon.signals`);
the engine's event stream wakes it as soon as a pilot dies (:mod:`plancton.daemon.events`);
actions run on worker threads (:mod:`plancton.daemon.executor`), so the loop never waits for
a pilot's vacate time.
"""

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace

from plancton import __version__
from plancton.config import deadline
from plancton.config.schema import Config
from plancton.control.machinefeatures import features_dir
from plancton.control.modefiles import (
    DRAIN_BY_COMMAND,
    cancel_drain_by,
    cancel_snooze,
    read_drain_by,
    read_mode,
    read_snooze,
    take_spawn_now,
    write_mode,
)
from plancton.control.node import labels_path
from plancton.control.paths import Paths
from plancton.control.state import PilotRecord, State, write_state
from plancton.control.updates import read_record, record_path
from plancton.core.modes import Mode
from plancton.core.policy import HostSample, Memory, Plan, decide, present_text
from plancton.daemon import logsetup
from plancton.daemon.events import EventWatcher
from plancton.daemon.executor import Executor
from plancton.daemon.host_watch import HostWatch
from plancton.daemon.legacy_pilots import LegacyPilots
from plancton.daemon.placement import Placement
from plancton.daemon.rollout_watch import RolloutWatch
from plancton.daemon.roster import Roster
from plancton.daemon.signals import SignalReceiver
from plancton.daemon.watcher import ConfigWatcher
from plancton.engines.base import Engine
from plancton.errors import EngineUnavailable, PilotError
from plancton.metrics.reporting import LoopReport, NullReporter, Reporter
from plancton.platform.cgroups import CGROUP_ROOT, PilotCgroup
from plancton.platform.host import HostSensor, Sensor
from plancton.platform.presence import PresenceSensor
from plancton.platform.sdnotify import notify

log = logging.getLogger(__name__)

MAX_ENGINE_RETRY_SECONDS = 30.0
#: Added to a policy timer's wait, so that the loop wakes just after it falls due, not just before.
TIMER_SLACK_SECONDS = 0.01


class Daemon:
    """One Plancton instance's main loop.

    Args:
        paths: the folders of this installation.
        config: the validated configuration to start with.
        engine: the engine of this instance's pilots.
        reporter: where loop reports and pilot events go.
        clock: a monotonic clock, for every timer.
        wall: the wall clock, only to date what the engine dates (pilots' creation) and for display.
        cgroup_root: where the cgroup file systems are mounted.
        sensor: makes what samples the host, given the pilots' cgroup.
    """

    def __init__(
        self,
        paths: Paths,
        config: Config,
        engine: Engine,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        cgroup_root: str = CGROUP_ROOT,
        sensor: Callable[[PilotCgroup], Sensor] = HostSensor,
    ) -> None:
        self.paths = paths
        self.make_sensor = sensor
        self.config = config
        self.engine = engine
        self.reporter: Reporter = reporter or NullReporter()
        self.clock = clock
        self.wall = wall
        self.wake = threading.Event()
        self.signals = SignalReceiver(self.wake)
        self.roster = Roster()
        self.placement = Placement(config.instance, features_dir(paths.rundir), cgroup_root)
        self.executor = Executor(engine, self.roster, self.reporter, self.placement, clock, wall)
        self.legacy_pilots = LegacyPilots(engine, self.executor.act_on_other, clock)
        self.events = EventWatcher(engine, self.roster, self.wake, wall)
        self.watcher = ConfigWatcher(paths.config_file, labels_path(paths), clock, wall)
        self.rollout = RolloutWatch(paths, wall)
        self.presence = PresenceSensor(config.input_idle, config.run_on_battery, wake=self.wake.set)
        self.memory = Memory()
        self.mode = read_mode(paths.rundir)
        self.snooze_until: float | None = None
        #: the drain deadline in force (Unix seconds) and who set it, or None
        self.drain_by: tuple[float, str] | None = None
        self.started_at = clock()
        self.started_wall = wall()
        self.host: HostWatch | None = None
        self.watching = False
        self.engine_name = ""
        self.last_plan = Plan()
        self.decided_at = 0.0
        self.engine_error: str | None = None
        self.engine_failures = 0
        self.loops = 0

    def run(self) -> int:
        """Run until asked to stop (or drain-stop completes); return the exit code."""
        self.signals.install()
        if os.geteuid() == 0:
            log.warning("running as root: a dedicated user in the docker group is enough (see the README)")
        log.info(
            "Plancton %s starting: instance %s, config %s (revision %s), mode %s",
            *(__version__, self.config.instance, self.paths.config_file, self.config.revision, self.mode.value),
        )
        self.reporter.configure(self.config)
        self._write_state()
        self.events.start()
        self.watching = True
        try:
            while not self._handle_signals():
                self.wake.clear()
                if self.watcher.changed(self.config.updateconfig):
                    self.reload()
                plan = self.iterate()
                notify("READY=1\nWATCHDOG=1" if self.loops == 1 else "WATCHDOG=1")
                if plan is not None and plan.exit_daemon:
                    self._finish_drain_stop()
                    break
                self.wake.wait(self._next_wait())
        finally:
            self.shutdown()
        return 0

    def iterate(self) -> Plan | None:
        """Run one loop: sense, decide, act, report. Return the plan, or None without engine."""
        loop_start = self.clock()
        calls_before = self.engine.api_calls
        self.loops += 1
        # starts under way before the listing: one that ends while the engine lists may be
        # missing from the listing, and must still count (an engine as slow to start as Podman
        # would otherwise get more pilots than max_docks)
        _, starting = self.executor.under_way()
        try:
            if self.host is None:
                self._prepare_engine()
            listing = self.engine.list()
        except EngineUnavailable as error:
            self._engine_down(error)
            self._report(loop_start, calls_before, None)
            return None
        self._engine_up()
        self.legacy_pilots.check(self.config)
        assert self.host is not None
        sample = self.host.sample()
        now = self.clock()
        self._follow_mode()
        self.placement.settle()
        self.roster.update(listing, now, self.wall())
        self.executor.confirm_starts(listing)
        in_flight, _ = self.executor.under_way()
        digest = self.executor.digest(self.config)
        views = self.roster.views(now, in_flight, starting, self.executor.preparing(), digest)
        history = self.executor.starts.history(now, spawn_now=take_spawn_now(self.paths.rundir))
        presence = replace(self.presence.sample(self.wall()), snooze_left=self._snooze_left())
        deadline_left = self._deadline_left()
        before = self.memory
        plan, self.memory = decide(
            *(sample, views, self.config, self.mode, now, before, history, presence), deadline_left=deadline_left
        )
        self._log_owner_change(before, sample, now)
        self.host.expect(self.memory.owner_busy, self.config)
        # before any pilot of this loop is made: the watch of a revision just taken counts
        # the pilots made from then on as its own
        self._watch_revision()
        self.executor.execute(plan, self.config)
        self.last_plan, self.decided_at = plan, now
        self._report(loop_start, calls_before, sample)
        return plan

    def _watch_revision(self) -> None:
        """Judge the revision the last update took by how its pilots fare (see
        :class:`RolloutWatch`)."""
        self.rollout.check(
            self.config.revision,
            self.roster.pilots(),
            self.executor.starts,
            image_unavailable=self.executor.images.unavailable(self.config.docker_image),
        )

    def reload(self) -> bool:
        """Load the configuration file again and apply it if valid, else keep the old one.

        Nothing here may end the daemon. Returns whether a new configuration is now in force.
        """
        new = self.watcher.load(self.config)
        if new is None:
            return False
        self.config = new
        self.presence.configure(new.input_idle, new.run_on_battery)
        self.legacy_pilots.look_again()
        try:
            logsetup.set_level(new.log_level)
            self.reporter.configure(new)
        except Exception:
            log.exception("applying configuration revision %s to logging and reporting failed", new.revision)
        return True

    def shutdown(self) -> None:
        """Stop watching events, let in-flight actions end, release resources, and remove the
        pilots' parent cgroup when no pilot of this instance is left."""
        notify("STOPPING=1")
        self.events.stop()
        if self.host is not None:
            self.host.stop()
        self.presence.close()
        self.executor.shutdown()
        self.rollout.close()
        self._remove_spares()
        self.reporter.close()
        left = self._pilots_left()
        if left == 0:
            self.placement.remove()
        log.info("Plancton stopped; %s pilots left running", "some" if left is None else left)

    # -- the engine and the host ------------------------------------------------------------

    def _prepare_engine(self) -> None:
        info = self.engine.engine_info()
        self.engine_name = f"{info.name} {info.version}"
        cgroup = self.placement.prepare(info, self.config)
        self.host = HostWatch(self.make_sensor(cgroup), self.wake.set)
        if self.watching:
            self.host.start()
        log.info(
            "%s (cgroup v%d, %s driver); pilots go under cgroup %s (%s)",
            *(self.engine_name, info.cgroup_version, info.cgroup_driver, cgroup.docker_parent, cgroup.setting),
        )

    def _remove_spares(self) -> None:
        """Remove the spares that wait, so that none is left behind for anything else to start
        (a daemon started later would create its own)."""
        if self.host is None:
            return
        try:
            self.executor.remove_spares()
        except (EngineUnavailable, PilotError) as error:
            log.error("cannot remove the spare pilot: %s; the next start of the daemon removes or adopts it", error)

    def _pilots_left(self) -> int | None:
        """Return how many pilots of this instance the engine still has, or None when unknown."""
        try:
            return len(self.engine.list())
        except (EngineUnavailable, PilotError):
            return None

    def _engine_down(self, error: EngineUnavailable) -> None:
        self.engine_failures += 1
        if self.engine_error != str(error):
            log.error("container engine unavailable: %s; pilots are left as they are, retrying with back-off", error)
        self.engine_error = str(error)

    def _engine_up(self) -> None:
        if self.engine_error is not None:
            log.info("container engine is back: managing pilots again")
        self.engine_error = None
        self.engine_failures = 0

    def _log_owner_change(self, before: Memory, sample: HostSample, now: float) -> None:
        """Say when the owner starts or stops counting as busy or present, and which timer
        that starts: the moments the policy's timers count from."""
        after, config = self.memory, self.config
        if after.owner_busy and not before.owner_busy:
            log.info(
                "owner busy at %.0f%% of host CPU (pilots excluded): pilots are paused after pause_delay %g s",
                *(sample.owner_percent, config.pause_delay),
            )
        if after.present and not before.present:
            log.info("owner present (%s): pilots are paused at once", present_text(after.present))
        if after.reclaim_ended == now and before.reclaim_ended != now:
            log.info("owner idle again: pilots start again after grace_spawn %g s", config.grace_spawn)
        elif before.owner_busy and not after.owner_busy:
            log.info("owner idle again at %.0f%% of host CPU, before pause_delay", sample.owner_percent)

    # -- modes, signals and timers ----------------------------------------------------------

    def _snooze_left(self) -> float | None:
        """Return the seconds left of the owner's snooze (None: none); say when one begins or
        ends, and remove the snooze file once it is over."""
        until = read_snooze(self.paths.rundir)
        if until is not None and until <= self.wall():
            cancel_snooze(self.paths.rundir)
            until = None
        if until != self.snooze_until:
            if until is not None:
                moment = time.strftime("%H:%M:%S", time.localtime(until))
                log.info("snoozed by the owner until %s: pilots give way", moment)
            else:
                log.info("snooze over: pilots may run again")
            self.snooze_until = until
        return until - self.wall() if until is not None else None

    def _deadline_left(self) -> float | None:
        """Return the seconds until the drain deadline in force (None: none), after telling the
        pilots of it and saying when it changes.

        The earlier of this node's (``planctonctl drain --by``) and the configuration's
        (``drain_by``) is in force."""
        drain_by = earliest_deadline(
            (read_drain_by(self.paths.rundir), DRAIN_BY_COMMAND),
            (self.config.drain_by, self._config_origin("drain_by")),
        )
        if drain_by != self.drain_by:
            if drain_by is not None:
                moment, source = drain_by
                log.info(
                    "drain deadline %s (set by %s): pilots start only while they would run drain_min_runtime "
                    "%g s before it, and those left are stopped at it",
                    *(deadline.shown(moment), source, self.config.drain_min_runtime),
                )
            else:
                log.info("drain deadline cancelled: pilots start as before")
            self.drain_by = drain_by
        self.placement.tell_deadline(drain_by[0] if drain_by else None)
        return drain_by[0] - self.wall() if drain_by else None

    def _config_origin(self, key: str) -> str:
        """Return the file a key of the configuration in force came from: an overlay's name,
        or the configuration file."""
        return dict(self.config.overlay_origins).get(key, self.paths.config_file)

    def _follow_mode(self) -> None:
        mode = read_mode(self.paths.rundir)
        if mode is not self.mode:
            log.info("mode changed from %s to %s (set with planctonctl)", self.mode.value, mode.value)
            self.mode = mode

    def _finish_drain_stop(self) -> None:
        """Drain-stop is done: the next start should be an ordinary one, so reset the mode."""
        log.info("drain-stop complete: no pilot left; the daemon exits and the mode is reset to active")
        try:
            write_mode(self.paths.rundir, Mode.ACTIVE)
            cancel_drain_by(self.paths.rundir)
        except OSError as error:
            log.error("cannot reset the mode in %s: %s", self.paths.rundir, error.strerror)

    def _handle_signals(self) -> bool:
        """Act on recorded signals; return whether the daemon should stop."""
        stop = False
        for number in self.signals.take():
            if number in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s: stopping (pilots keep running)", signal.Signals(number).name)
                stop = True
            elif number == signal.SIGHUP:
                log.info("received SIGHUP: reloading the configuration")
                self.reload()
        return stop

    def _next_wait(self) -> float:
        """Return how long to sleep: main_sleep, less when a policy timer falls due sooner (its
        due time counts from the moment of the decision, not from the end of the loop), and a
        growing back-off while the engine is away."""
        if self.engine_error is not None:
            return min(self.config.main_sleep, MAX_ENGINE_RETRY_SECONDS, 2.0 ** min(self.engine_failures, 5))
        if self.last_plan.wake_in is None:
            return self.config.main_sleep
        due = self.decided_at + self.last_plan.wake_in + TIMER_SLACK_SECONDS
        return max(0.0, min(self.config.main_sleep, due - self.clock()))

    # -- reporting --------------------------------------------------------------------------

    def _report(self, loop_start: float, calls_before: int, sample: HostSample | None) -> None:
        update = read_record(record_path(self.paths))
        report = LoopReport(
            mode=self.mode.value,
            uptime_seconds=self.clock() - self.started_at,
            pilots_by_state=self.roster.count_by_state(),
            config_revision=self.config.revision,
            sample=sample,
            loop_seconds=self.clock() - loop_start,
            api_calls=self.engine.api_calls - calls_before,
            engine_available=self.engine_error is None,
            holds=self.last_plan.holds,
            pilots_cpu=self.placement.cpu_counter(),
            cpu_cap=self.placement.cpu_cap,
            engine=self.engine_name,
            image_ready=self.executor.images.known(self.config.docker_image),
            config_rejected=self.watcher.rejected,
            config_update_failure=update.outcome.value if update and update.failed else "",
            config_update_checked_at=update.checked_at if update else None,
            drain_by=self.drain_by[0] if self.drain_by else None,
        )
        self.reporter.loop(report)
        self._write_state(report)

    def _write_state(self, report: LoopReport | None = None) -> None:
        state = State(
            pid=os.getpid(),
            instance=self.config.instance,
            started_at=self.started_wall,
            updated_at=self.wall(),
            mode=self.mode.value,
            config_file=self.paths.config_file,
            config_revision=self.config.revision,
            engine_error=self.engine_error,
            engine=self.engine_name,
            legacy_pilots=self.legacy_pilots.names,
            cgroup=self.placement.describe(),
            log_error=logsetup.write_problem(),
            why=self.last_plan.reasons,
            drain_by=self.drain_by[0] if self.drain_by else None,
            drain_by_source=self.drain_by[1] if self.drain_by else "",
            revision_trial=self.rollout.describe(),
            holds=tuple(hold.value for hold in self.last_plan.holds),
            loops=self.loops,
            api_calls_last_loop=report.api_calls if report else 0,
            loop_seconds=report.loop_seconds if report else 0.0,
            sample=asdict(report.sample) if report and report.sample else None,
            pilots=tuple(
                PilotRecord(id=p.id, name=p.name, state=p.shown_state, created=p.created, image=p.image)
                for p in self.roster.pilots()
            ),
        )
        try:
            write_state(self.paths.state_file, state)
        except OSError as error:
            log.error("cannot write the state file %s: %s", self.paths.state_file, error.strerror)


def earliest_deadline(*deadlines: tuple[float | None, str]) -> tuple[float, str] | None:
    """Given deadlines (Unix seconds, None for none) each with who set it, return the earliest
    that is set, with its setter, or None when none is."""
    return min(((moment, source) for moment, source in deadlines if moment is not None), default=None)
