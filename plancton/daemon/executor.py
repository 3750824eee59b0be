"""The executor of a plan: each action the policy decided, carried out through the engine.

The actions run on worker threads (:mod:`plancton.daemon.actions`) and are logged and
reported.
"""

import functools
import logging
import secrets
import socket
import time
from collections.abc import Callable

from plancton.config.schema import Config
from plancton.config.ulimits import pilot_ulimits, rlimit_fix
from plancton.core.policy import Plan
from plancton.daemon.actions import START_CONCURRENCY, STOP_CONCURRENCY, ActionRunner
from plancton.daemon.placement import Placement
from plancton.daemon.roster import Roster
from plancton.daemon.starts import INSTANT_EXIT_SECONDS, StartTracker
from plancton.engines.base import Engine
from plancton.engines.images import ImageKeeper
from plancton.engines.spec import container_spec
from plancton.errors import EngineUnavailable, ImageMissing, LimitRefused, PilotError
from plancton.metrics.reporting import PilotEvent, Reporter

log = logging.getLogger(__name__)

#: Pause requests per pause, when the runtime gives up freezing the pilot.
FREEZE_ATTEMPTS = 3


class Executor:
    """Carries out plans on one engine's pilots.

    Args:
        engine: the engine of this instance's pilots.
        roster: the daemon's roster, for names and our own stops.
        reporter: where pilot events go.
        placement: the pilots' parent cgroup, limits and freeze room.
        clock: a monotonic clock.
        wall: the wall clock, to date pilots.
    """

    def __init__(
        self,
        engine: Engine,
        roster: Roster,
        reporter: Reporter,
        placement: Placement,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.roster = roster
        self.reporter = reporter
        self.placement = placement
        self.clock = clock
        self.wall = wall
        self.starts = StartTracker()
        self.images = ImageKeeper(engine, clock)
        self.host_name = socket.gethostname()
        self._actions = ActionRunner(START_CONCURRENCY, STOP_CONCURRENCY)

    def act_on_other(self, container: str, action: Callable[[], None]) -> None:
        """Run a slow action on a container that is not one of this instance's pilots (the
        legacy pilots of Plancton 0.6), in the background, unless one on it is under way."""
        self._actions.act(container, action, slow=True)

    def under_way(self) -> tuple[frozenset[str], int]:
        """Return the pilots with an action under way and how many starts are."""
        return self._actions.under_way()

    def execute(self, plan: Plan, config: Config) -> None:
        """Hand every action of the plan to the workers, under the configuration it was
        decided with; return at once."""
        self.placement.cap(plan.cpu_cap)  # a file write: at once, before pilots are resumed or started
        act = self._actions.act
        for container in plan.remove:
            act(container, functools.partial(self._remove, container))
        for container, reason in plan.kill:
            act(container, functools.partial(self._end, container, reason, None), slow=True)
        for container, reason in plan.stop:
            act(container, functools.partial(self._end, container, reason, config.vacate_time), slow=True)
        for container in plan.pause:
            act(container, functools.partial(self._pause, container, True))
        for container in plan.unpause:
            act(container, functools.partial(self._pause, container, False))
        if plan.start and self._image_ready(config):
            if config.docker_privileged:
                log.warning("starting %d privileged pilots: docker_privileged is true", plan.start)
            for _ in range(plan.start):
                self._actions.start(functools.partial(self._start_one, config))

    def shutdown(self) -> None:
        """Drop the actions that have not begun and wait for those that have."""
        self._actions.shutdown()

    def _image_ready(self, config: Config) -> bool:
        try:
            return self.images.ready(config.docker_image, config.pull_policy, config.image_expiration)
        except (PilotError, EngineUnavailable) as error:
            log.error("cannot check the image %s: %s", config.docker_image, error)
            return False

    def _start_one(self, config: Config) -> None:
        ceilings = self.placement.ulimit_ceilings
        try:
            token = secrets.token_hex(4)
            spec = container_spec(config, self.placement.parent, self.host_name, token, self.wall(), ceilings)
            self.engine.create_and_start(spec)
        except (PilotError, EngineUnavailable) as error:
            if isinstance(error, ImageMissing):
                self.images.forget(config.docker_image)
            delay = self.starts.failed(self.clock())
            suffix = f"; backing off {delay:.0f} s" if delay else ""
            log.error("cannot start a pilot: %s%s", error, suffix)
            if isinstance(error, LimitRefused):
                log.error("%s", rlimit_fix(error.limit, pilot_ulimits(config.ulimits, ceilings)))
            self.reporter.pilot_event(PilotEvent("start_failed", "", reason=str(error)[:200]))
        else:
            self.starts.started(self.clock())
            log.info("started pilot %s (%s)", spec.name, " ".join(spec.command))
            self.reporter.pilot_event(PilotEvent("started", spec.name))

    def _remove(self, container: str) -> None:
        pilot = self.roster.get(container)
        self.engine.remove(container)
        if pilot is None:
            return
        runtime = max(0.0, self.wall() - pilot.created)
        ours = self.roster.take_stopped_by_us(container)
        log.info("pilot %s %s with code %s after %.0f s: removed", pilot.name, pilot.state, pilot.exit_code, runtime)
        failed = not ours and (pilot.state == "created" or runtime < INSTANT_EXIT_SECONDS)
        event = PilotEvent("exited", pilot.name, pilot.exit_code, runtime, by_plancton=ours, failed=failed)
        self.reporter.pilot_event(event)
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

    def _end(self, container: str, reason: str, vacate: float | None) -> None:
        """Stop a pilot with ``vacate`` seconds to finish, or kill it at once (None)."""
        pilot = self.roster.get(container)
        name = self.roster.name(container)
        paused = pilot is not None and pilot.state == "paused"
        self.roster.stopping_ourselves(container)
        if vacate is None:
            log.warning("killing pilot %s (%s)", name, reason)
            self.engine.kill(container, paused=paused)
        else:
            log.info("stopping pilot %s (%s): SIGTERM, SIGKILL after %.0f s", name, reason, vacate)
            self.engine.stop(container, vacate, paused=paused)
        self.reporter.pilot_event(PilotEvent("stopped" if vacate is not None else "killed", name, reason=reason))

    def _pause(self, container: str, pause: bool) -> None:
        name = self.roster.name(container)
        if pause:
            error = self._freeze(container)
            if error is not None:
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

    def _freeze(self, container: str) -> PilotError | None:
        """Pause a pilot, asking again when the freezer gave up; return the last error, or None.

        On cgroup v1 the runtime waits only a moment for every task of the pilot to reach the
        freezer, and a pilot on a crowded CPU may miss it even with its weight lifted for the
        freeze.
        """
        error: PilotError | None = None
        with self.placement.freeze_room():
            for _ in range(FREEZE_ATTEMPTS):
                try:
                    self.engine.pause(container)
                except PilotError as failed:
                    error = failed
                else:
                    return None
        return error
