"""The daemon's loop: sense, decide, act, report; with modes, reload and signals.

Signal handlers only record the signal and wake the loop; the loop acts on it. Docker's
event stream, watched in a background thread, wakes the loop as soon as a pilot dies, so a
replacement starts within a second instead of at the next ``main_sleep``. Slow actions run
on worker threads (:mod:`plancton.daemon.actions`) so that the loop never waits for a pilot's
vacate time.
"""

import dataclasses
import functools
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from types import FrameType

from plancton import __version__
from plancton.config import files, loader, schema
from plancton.control.modes import Mode, read_mode, take_spawn_now, write_mode, write_private_file
from plancton.control.paths import Paths
from plancton.core.policy import HostSample, Memory, PilotView, Plan, decide
from plancton.daemon import actions, logsetup
from plancton.daemon.starts import StartTracker
from plancton.engines.docker_api import DockerPilots, Pilot
from plancton.engines.images import ImageKeeper
from plancton.engines.spec import container_spec
from plancton.errors import ConfigError, EngineUnavailable, PilotError
from plancton.metrics.reporting import LoopReport, NullReporter, PilotEvent, Reporter
from plancton.platform.cgroups import PilotCgroup
from plancton.platform.host import HostSensor, host_facts
from plancton.platform.sdnotify import notify

log = logging.getLogger(__name__)

MAX_ENGINE_RETRY_SECONDS = 30.0
#: Added to a policy timer's wait, so that the loop wakes just after it falls due, not just before.
TIMER_SLACK_SECONDS = 0.01
WAKING_EVENTS = frozenset({"die", "destroy", "oom"})
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class SignalReceiver:
    """Records signals for the loop to act on, and wakes it (like Supervisor's)."""

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake
        self._pending: list[int] = []

    def install(self) -> None:
        """Route the daemon's signals to :meth:`receive`."""
        for number in HANDLED_SIGNALS:
            signal.signal(number, self.receive)

    def receive(self, number: int, frame: FrameType | None) -> None:
        """Record a signal; nothing else happens inside a handler."""
        self._pending.append(number)
        self.wake.set()

    def take(self) -> list[int]:
        """Return the signals received since the last call."""
        taken, self._pending = self._pending, []
        return taken


class Daemon:
    """One Plancton instance's main loop.

    Args:
        paths: the folders of this installation.
        config: the validated configuration to start with.
        engine: the Docker adapter for this instance.
        reporter: where loop reports and pilot events go.
        clock: a monotonic clock, for every timer.
        wall: the wall clock, only to date what Docker dates (pilots' creation) and for display.
    """

    def __init__(
        self,
        paths: Paths,
        config: schema.Config,
        engine: DockerPilots,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.paths = paths
        self.config = config
        self.engine = engine
        self.reporter: Reporter = reporter or NullReporter()
        self.clock = clock
        self.wall = wall
        self.host_name = socket.gethostname()
        self.wake = threading.Event()
        self.signals = SignalReceiver(self.wake)
        self.images = ImageKeeper(engine, clock)
        self.starts = StartTracker()
        self.memory = Memory()
        self.mode = read_mode(paths.rundir)
        self.started_at = clock()
        self.started_wall = wall()
        self.cgroup: PilotCgroup | None = None
        self.sensor: HostSensor | None = None
        self.last_plan = Plan()
        self.engine_error: str | None = None
        self.engine_failures = 0
        self.loops = 0
        self._stopping = threading.Event()
        self._first_seen: dict[str, float] = {}
        self._pilots: dict[str, Pilot] = {}
        self._died: dict[str, int | None] = {}
        self._stopped_by_us: set[str] = set()
        self._lock = threading.Lock()
        self._actions = actions.ActionRunner(actions.START_CONCURRENCY, actions.STOP_CONCURRENCY)
        self._config_stat = self._stat_config()
        self._config_checked = clock()
        self._events_thread = threading.Thread(target=self._watch_events, name="plancton-events", daemon=True)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until asked to stop (or drain-stop completes); return the exit code."""
        self.signals.install()
        if os.geteuid() == 0:
            log.warning("running as root: a dedicated user in the docker group is enough (see the README)")
        log.info(
            "Plancton %s starting: instance %s, config %s (revision %s), mode %s",
            __version__,
            self.config.instance,
            self.paths.config_file,
            self.config.revision,
            self.mode.value,
        )
        self.reporter.configure(self.config)
        self._write_state()
        self._events_thread.start()
        try:
            while not self._handle_signals():
                self.wake.clear()
                self._check_config()
                plan = self.iterate()
                notify("READY=1\nWATCHDOG=1" if self.loops == 1 else "WATCHDOG=1")
                if plan is not None and plan.exit_daemon:
                    self._finish_drain_stop()
                    break
                self.wake.wait(self._next_wait())
        finally:
            self.shutdown()
        return 0

    def _finish_drain_stop(self) -> None:
        """Drain-stop is done: the next start should be an ordinary one, so reset the mode."""
        log.info("drain-stop complete: no pilot left; the daemon exits and the mode is reset to active")
        try:
            write_mode(self.paths.rundir, Mode.ACTIVE)
        except OSError as error:
            log.error("cannot reset the mode in %s: %s", self.paths.rundir, error.strerror)

    def _next_wait(self) -> float:
        """Return how long to sleep: main_sleep, less when a policy timer falls due sooner, and
        a growing back-off while the engine is away."""
        if self.engine_error is not None:
            return min(self.config.main_sleep, MAX_ENGINE_RETRY_SECONDS, 2.0 ** min(self.engine_failures, 5))
        if self.last_plan.wake_in is None:
            return self.config.main_sleep
        return min(self.config.main_sleep, self.last_plan.wake_in + TIMER_SLACK_SECONDS)

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

    def iterate(self) -> Plan | None:
        """Run one loop: sense, decide, act, report. Return the plan, or None without engine."""
        loop_start = self.clock()
        calls_before = self.engine.api_calls
        self.loops += 1
        try:
            if self.sensor is None:
                self._prepare_engine()
            pilots = self.engine.list()
        except EngineUnavailable as error:
            self._engine_down(error)
            self._report(loop_start, calls_before, None)
            return None
        self._engine_up()
        assert self.sensor is not None
        sample = self.sensor.sample()
        now = self.clock()
        self._follow_mode()
        history = self.starts.history(now, spawn_now=take_spawn_now(self.paths.rundir))
        plan, self.memory = decide(sample, self._views(pilots, now), self.config, self.mode, now, self.memory, history)
        self._act(plan)
        self.last_plan = plan
        self._report(loop_start, calls_before, sample)
        return plan

    # -- sensing ----------------------------------------------------------------------------

    def _prepare_engine(self) -> None:
        info = self.engine.engine_info()
        self.cgroup = PilotCgroup(self.config.instance, info.cgroup_driver, info.cgroup_version)
        warning = self.cgroup.set_lowest_weight()
        if warning:
            log.warning("%s", warning)
        self.sensor = HostSensor(self.cgroup)
        log.info(
            "Docker Engine %s (cgroup v%d, %s driver); pilots go under cgroup %s",
            info.version,
            info.cgroup_version,
            info.cgroup_driver,
            self.cgroup.docker_parent,
        )

    def _engine_down(self, error: EngineUnavailable) -> None:
        self.engine_failures += 1
        if self.engine_error != str(error):
            log.error("Docker Engine unavailable: %s; pilots are left as they are, retrying with back-off", error)
        self.engine_error = str(error)

    def _engine_up(self) -> None:
        if self.engine_error is not None:
            log.info("Docker Engine is back: managing pilots again")
        self.engine_error = None
        self.engine_failures = 0

    def _views(self, pilots: list[Pilot], now: float) -> list[PilotView]:
        """Return what the policy sees of the pilots, ages from a monotonic clock."""
        wall = self.wall()
        pilots = self._apply_deaths(pilots)
        self._pilots = {pilot.id: pilot for pilot in pilots}
        # a pilot first seen now (adopted or just created) is dated once from its wall-clock
        # creation time; afterwards clock jumps cannot change its age
        self._first_seen = {
            pilot.id: self._first_seen.get(pilot.id, now - max(0.0, wall - pilot.created)) for pilot in pilots
        }
        in_flight, starting = self._actions.under_way()
        views = [
            PilotView(
                id=pilot.id,
                state=pilot.state,
                age=now - self._first_seen[pilot.id],
                image=pilot.image,
                stopping=pilot.id in in_flight,
            )
            for pilot in pilots
        ]
        views += [
            PilotView(id=f"starting-{index}", state="created", age=0.0, stopping=False) for index in range(starting)
        ]
        return views

    def _apply_deaths(self, pilots: list[Pilot]) -> list[Pilot]:
        """Mark pilots that Docker reported dead as exited, even if the listing lags behind."""
        with self._lock:
            died = self._died
            self._died = {}
        alive = {"running", "restarting", "paused"}
        return [
            dataclasses.replace(pilot, state="exited", exit_code=died[pilot.id])
            if pilot.id in died and pilot.state in alive
            else pilot
            for pilot in pilots
        ]

    def _follow_mode(self) -> None:
        mode = read_mode(self.paths.rundir)
        if mode is not self.mode:
            log.info("mode changed from %s to %s (set with planctonctl)", self.mode.value, mode.value)
            self.mode = mode

    # -- acting -----------------------------------------------------------------------------

    def _act(self, plan: Plan) -> None:
        act = self._actions.act
        for container in plan.remove:
            act(container, functools.partial(self._remove, container))
        for container, reason in plan.kill:
            act(container, functools.partial(self._end, container, reason, True), slow=True)
        for container, reason in plan.stop:
            act(container, functools.partial(self._end, container, reason, False), slow=True)
        for container in plan.pause:
            act(container, functools.partial(self._pause, container, True))
        for container in plan.unpause:
            act(container, functools.partial(self._pause, container, False))
        if plan.start and self._image_ready():
            if self.config.docker_privileged:
                log.warning("starting %d privileged pilots: docker_privileged is true", plan.start)
            for _ in range(plan.start):
                self._actions.start(self._start_one)

    def _image_ready(self) -> bool:
        try:
            return self.images.ready(self.config.docker_image, self.config.pull_policy, self.config.image_expiration)
        except (PilotError, EngineUnavailable) as error:
            log.error("cannot check the image %s: %s", self.config.docker_image, error)
            return False

    def _start_one(self) -> None:
        config = self.config
        try:
            assert self.cgroup is not None
            spec = container_spec(config, self.cgroup.docker_parent, self.host_name, secrets.token_hex(4), self.wall())
            self.engine.create_and_start(spec)
        except (PilotError, EngineUnavailable) as error:
            if "no such image" in str(error).lower():
                self.images.forget(config.docker_image)
            delay = self.starts.failed(self.clock())
            suffix = f"; backing off {delay:.0f} s" if delay else ""
            log.error("cannot start a pilot: %s%s", error, suffix)
            self.reporter.pilot_event(PilotEvent("start_failed", "", reason=str(error)[:200]))
        else:
            self.starts.started(self.clock())
            log.info("started pilot %s (%s)", spec.name, " ".join(spec.command))
            self.reporter.pilot_event(PilotEvent("started", spec.name))

    def _remove(self, container: str) -> None:
        pilot = self._pilots.get(container)
        self.engine.remove(container)
        if pilot is None:
            return
        runtime = max(0.0, self.wall() - pilot.created)
        ours = container in self._stopped_by_us
        self._stopped_by_us.discard(container)
        log.info("pilot %s %s with code %s after %.0f s: removed", pilot.name, pilot.state, pilot.exit_code, runtime)
        self.reporter.pilot_event(PilotEvent("exited", pilot.name, pilot.exit_code, runtime))
        if pilot.state == "created":
            self.starts.failed(self.clock())
        elif not ours:
            delay = self.starts.exited(runtime, self.clock())
            if delay:
                log.error(
                    "pilots keep exiting within seconds (last: %s, code %s): backing off %.0f s; "
                    "check docker_image and docker_cmd",
                    pilot.name,
                    pilot.exit_code,
                    delay,
                )

    def _end(self, container: str, reason: str, kill: bool) -> None:
        pilot = self._pilots.get(container)
        name = pilot.name if pilot else container[:12]
        paused = pilot is not None and pilot.state == "paused"
        self._stopped_by_us.add(container)
        if kill:
            log.warning("killing pilot %s (%s)", name, reason)
            self.engine.kill(container, paused=paused)
        else:
            log.info("stopping pilot %s (%s): SIGTERM, SIGKILL after %.0f s", name, reason, self.config.vacate_time)
            self.engine.stop(container, self.config.vacate_time, paused=paused)
        self.reporter.pilot_event(PilotEvent("killed" if kill else "stopped", name, reason=reason))

    def _pause(self, container: str, pause: bool) -> None:
        pilot = self._pilots.get(container)
        name = pilot.name if pilot else container[:12]
        if pause:
            try:
                self.engine.pause(container)
            except PilotError as error:
                # a pilot starved by the lowest CPU weight may not reach the freezer in time
                log.warning(
                    "pilot %s could not be frozen (%s); it gets no CPU while the owner is busy and counts "
                    "as paused: it is stopped after grace_kill if the owner stays busy",
                    name,
                    error,
                )
                return
        else:
            self.engine.unpause(container)
        log.info("%s pilot %s", "paused" if pause else "resumed", name)
        self.reporter.pilot_event(PilotEvent("paused" if pause else "resumed", name))

    # -- configuration ----------------------------------------------------------------------

    def _stat_config(self) -> files.Fingerprint | None:
        return files.fingerprint(self.paths.config_file)

    def _check_config(self) -> None:
        """Every ``updateconfig`` seconds, reload when the file's modification time or content
        changed; a file written within the last second is looked at again at the next loop,
        so that a half-written file is never applied.
        """
        if self.clock() - self._config_checked < self.config.updateconfig:
            return
        current = self._stat_config()
        if current == self._config_stat:
            self._config_checked = self.clock()
        elif not files.settling(current, self.wall()):
            self._config_checked = self.clock()
            self.reload()

    def reload(self) -> bool:
        """Load the configuration file again; apply it if valid, else keep the old one.

        Nothing here may end the daemon: any failure is logged and the last good
        configuration stays in force. Returns whether a new configuration is now in force.
        """
        self._config_stat = self._stat_config()
        old = self.config
        rejected = f"configuration {self.paths.config_file} rejected, keeping revision {old.revision}"
        try:
            new, warnings = loader.load(self.paths.config_file, host_facts())
        except ConfigError as error:
            log.error("%s: %s", rejected, error.describe())
            return False
        except Exception:
            log.exception("%s: unexpected error while loading it", rejected)
            return False
        for warning in warnings:
            log.warning("%s", warning)
        if new.instance != old.instance:
            log.error(
                "%s: instance cannot change from %s to %s while running; restart the daemon to rename it",
                rejected,
                old.instance,
                new.instance,
            )
            return False
        if new.revision == old.revision:
            log.info("configuration unchanged (revision %s)", new.revision)
            return False
        changed = [name for name in schema.KEYS if getattr(new, name) != getattr(old, name)]
        self.config = new
        log.info("configuration revision %s applied (changed: %s)", new.revision, ", ".join(changed) or "nothing")
        try:
            logsetup.set_level(new.log_level)
            self.reporter.configure(new)
        except Exception:
            log.exception("applying configuration revision %s to logging and reporting failed", new.revision)
        return True

    # -- events -----------------------------------------------------------------------------

    def _watch_events(self) -> None:
        delay = 1.0
        since: int | None = None
        while not self._stopping.is_set():
            try:
                self.engine.watch_events(self._on_event, since)
                delay = 1.0
            except (EngineUnavailable, PilotError) as error:
                log.debug("event stream unavailable: %s", error)
            except Exception:
                log.exception("event stream failed")
            # the next stream replays what happens while this one is down
            since = int(self.wall()) - 1
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, MAX_ENGINE_RETRY_SECONDS)
            self.wake.set()

    def _on_event(self, action: str, container: str, exit_code: int | None) -> None:
        if action == "die":
            # the engine's listing may still say "running" for a moment after this event
            with self._lock:
                self._died[container] = exit_code
        if action in WAKING_EVENTS:
            self.wake.set()

    # -- reporting --------------------------------------------------------------------------

    def _report(self, loop_start: float, calls_before: int, sample: HostSample | None) -> None:
        states: dict[str, int] = {}
        for pilot in self._pilots.values():
            states[pilot.state] = states.get(pilot.state, 0) + 1
        report = LoopReport(
            mode=self.mode.value,
            uptime_seconds=self.clock() - self.started_at,
            pilots_by_state=states,
            config_revision=self.config.revision,
            sample=sample,
            loop_seconds=self.clock() - loop_start,
            api_calls=self.engine.api_calls - calls_before,
            engine_available=self.engine_error is None,
            reasons=self.last_plan.reasons,
        )
        self.reporter.loop(report)
        self._write_state(report)

    def _write_state(self, report: LoopReport | None = None) -> None:
        state = {
            "pid": os.getpid(),
            "instance": self.config.instance,
            "started_at": self.started_wall,
            "updated_at": self.wall(),
            "mode": self.mode.value,
            "config_file": self.paths.config_file,
            "config_revision": self.config.revision,
            "engine_error": self.engine_error,
            "log_error": logsetup.write_problem(),
            "why": list(self.last_plan.reasons),
            "loops": self.loops,
            "api_calls_last_loop": report.api_calls if report else 0,
            "loop_seconds": report.loop_seconds if report else 0.0,
            "sample": asdict(report.sample) if report and report.sample else None,
            "pilots": [
                {"id": p.id, "name": p.name, "state": p.state, "created": p.created, "image": p.image}
                for p in sorted(self._pilots.values(), key=lambda pilot: pilot.created)
            ],
        }
        try:
            write_private_file(self.paths.state_file, json.dumps(state, indent=1) + "\n")
        except OSError as error:
            log.error("cannot write the state file %s: %s", self.paths.state_file, error.strerror)

    # -- shutdown ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop watching events, let in-flight actions end, release resources."""
        notify("STOPPING=1")
        self._stopping.set()
        self.engine.close_events()
        self._actions.shutdown()
        if self._events_thread.is_alive():
            self._events_thread.join(timeout=5)
        self.reporter.close()
        log.info("Plancton stopped; %d pilots left running", len(self._pilots))
