"""The executor of a plan: each action the policy decided, carried out through the engine.

The actions run on worker threads (:mod:`plancton.daemon.actions`) and are logged and
reported.
"""

import contextlib
import functools
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable

from plancton.config.schema import Config
from plancton.config.ulimits import pilot_ulimits, rlimit_fix
from plancton.core.policy import Plan
from plancton.daemon.actions import START_CONCURRENCY, STOP_CONCURRENCY, ActionRunner
from plancton.daemon.placement import Placement
from plancton.daemon.roster import Roster
from plancton.daemon.starts import INSTANT_EXIT_SECONDS, StartTracker
from plancton.engines.base import Engine, Pilot
from plancton.engines.images import ImageKeeper
from plancton.engines.spec import ContainerSpec, as_spare, container_spec, spec_digest
from plancton.errors import EngineUnavailable, ImageMissing, LimitRefused, PilotError
from plancton.metrics.reporting import PilotEvent, Reporter

log = logging.getLogger(__name__)

#: Pause requests per pause, when the runtime gives up freezing the pilot.
FREEZE_ATTEMPTS = 3
#: How long a start whose request went unanswered may still turn up carried out.
UNANSWERED_START_SECONDS = 600.0


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
        #: pilots whose start request the engine did not answer, by name, with when: it may
        #: still carry the start out
        self._unanswered: dict[str, float] = {}
        self._unanswered_lock = threading.Lock()

    def act_on_other(self, container: str, action: Callable[[], None]) -> None:
        """Run a slow action on a container that is not one of this instance's pilots (the
        legacy pilots of Plancton 0.6), in the background, unless one on it is under way."""
        self._actions.act(container, action, slow=True)

    def under_way(self) -> tuple[frozenset[str], int]:
        """Return the pilots with an action under way and how many starts are."""
        return self._actions.under_way()

    def execute(self, plan: Plan, config: Config) -> None:
        """Hand every action of the plan to the workers, under the configuration it was
        decided with; return at once. Spares start first: a pilot's end waits for them. Each
        start waits until the engine is done with the pilots that ended (:meth:`Engine.settle`),
        which a start beside that work would only wait behind."""
        self.placement.cap(plan.cpu_cap)  # a file write: at once, before pilots are resumed or started
        act = self._actions.act
        ended = plan.remove
        for container in plan.start_spares:
            self._actions.start(functools.partial(self._start_spare, container, config, ended), container)
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
                self._actions.start(functools.partial(self._start_one, config, ended))
        if plan.prepare and self._image_ready(config):
            for _ in range(plan.prepare):
                self._actions.prepare(functools.partial(self._prepare_spare, config))

    def preparing(self) -> int:
        """Return how many spares are being created."""
        return self._actions.preparing()

    def digest(self, config: Config) -> str:
        """Return the digest of the container a pilot created now would be under ``config`` (a
        spare of another digest is out of date)."""
        return spec_digest(self._spec(config))

    def shutdown(self) -> None:
        """Drop the actions that have not begun and wait for those that have."""
        self._actions.shutdown()

    def remove_spares(self) -> None:
        """Remove the spares that wait (created, never started): when the daemon stops, no
        container of its is left for anything but a daemon to start.

        Raises:
            EngineUnavailable: the engine cannot be reached.
            PilotError: it refused a removal.
        """
        for pilot in self.engine.list():
            if pilot.shown_state == "spare":
                self.engine.remove(pilot.id)
                log.info("removed spare pilot %s: the daemon stops", pilot.name)

    def _image_ready(self, config: Config) -> bool:
        try:
            return self.images.ready(config.docker_image, config.pull_policy, config.image_expiration)
        except (PilotError, EngineUnavailable) as error:
            log.error("cannot check the image %s: %s", config.docker_image, error)
            return False

    def _spec(self, config: Config) -> ContainerSpec:
        """Return the container of a new pilot under this configuration."""
        token = secrets.token_hex(4)
        placement = self.placement
        return container_spec(
            *(config, placement.parent, self.host_name, token, self.wall()),
            ceilings=placement.ulimit_ceilings,
            features_dir=placement.features_dir,
        )

    def _start_one(self, config: Config, ended: tuple[str, ...] = ()) -> None:
        spec: ContainerSpec | None = None
        try:
            self._settle(ended)
            spec = self._spec(config)
            self.engine.create_and_start(spec)
        except (PilotError, EngineUnavailable) as error:
            if spec is not None:
                self._maybe_carried_out(spec.name, error)
            self._start_failed(config, error, "start a pilot")
        else:
            self._started(spec.name, spec.command)

    def _maybe_carried_out(self, name: str, error: Exception) -> None:
        """Remember a pilot whose start request went unanswered (``error`` says the engine could
        not be reached): the engine may still have carried it out, see :meth:`confirm_starts`."""
        if isinstance(error, EngineUnavailable):
            with self._unanswered_lock:
                self._unanswered[name] = self.clock()

    def confirm_starts(self, listing: list[Pilot]) -> None:
        """Count as started the pilots of this listing whose start request went unanswered
        (it timed out, or the connection was lost) but which the engine carried out: they are
        listed past "created". A request older than :data:`UNANSWERED_START_SECONDS` is
        forgotten."""
        now = self.clock()
        with self._unanswered_lock:
            self._unanswered = {
                name: at for name, at in self._unanswered.items() if now - at < UNANSWERED_START_SECONDS
            }
            carried_out = [pilot for pilot in listing if pilot.name in self._unanswered and pilot.state != "created"]
            for pilot in carried_out:
                del self._unanswered[pilot.name]
        for pilot in carried_out:
            log.warning("pilot %s started after all: the engine carried out the start it did not answer", pilot.name)
            self._count_start(pilot.name)

    def _settle(self, ended: tuple[str, ...]) -> None:
        """Return once the engine is done with the end of these pilots."""
        for container in ended:
            self.engine.settle(container)

    def _start_spare(self, container: str, config: Config, ended: tuple[str, ...]) -> None:
        """Start a spare once the engine is done with the ``ended`` pilots, if it is still what
        a new pilot would be (configuration and image); otherwise remove it and start a new
        pilot instead."""
        spare = self.roster.get(container)
        try:
            self._settle(ended)
            spec = self._spec(config)
            current_image = self.engine.image_id(config.docker_image)
            if spare is None or spare.digest != spec_digest(spec) or not _same_image(spare.image_id, current_image):
                log.info("spare pilot %s is out of date: removing it", self.roster.name(container))
                self.engine.remove(container)
                self._start_one(config)
                return
            self.engine.start(container)
        except (PilotError, EngineUnavailable) as error:
            self._maybe_carried_out(self.roster.name(container), error)
            self._start_failed(config, error, "start a spare pilot")
            with contextlib.suppress(PilotError, EngineUnavailable):
                self.engine.remove(container)  # if the engine cannot be reached, it counts once listed running
        else:
            self.roster.started_spare(container, self.clock(), self.wall())
            self._started(spare.name, spec.command)

    def _prepare_spare(self, config: Config) -> None:
        try:
            spec = as_spare(self._spec(config))
            self.engine.create(spec)
        except (PilotError, EngineUnavailable) as error:
            self._start_failed(config, error, "create a spare pilot")
        else:
            log.info("created spare pilot %s, started when a pilot ends", spec.name)

    def _started(self, name: str, command: list[str]) -> None:
        log.info("started pilot %s (%s)", name, " ".join(command))
        self._count_start(name)

    def _count_start(self, name: str) -> None:
        """Count a pilot's start, for the back-off and the health signs, and report it."""
        self.starts.started(self.clock())
        self.reporter.pilot_event(PilotEvent("started", name))

    def _start_failed(self, config: Config, error: Exception, what: str) -> None:
        """Count a failed start (or creation) towards the back-off, and say why it failed."""
        if isinstance(error, ImageMissing):
            self.images.forget(config.docker_image)
        delay = self.starts.failed(self.clock())
        suffix = f"; backing off {delay:.0f} s" if delay else ""
        log.error("cannot %s: %s%s", what, error, suffix)
        if isinstance(error, LimitRefused):
            log.error("%s", rlimit_fix(error.limit, pilot_ulimits(config.ulimits, self.placement.ulimit_ceilings)))
        self.reporter.pilot_event(PilotEvent("start_failed", "", reason=str(error)[:200]))

    def _remove(self, container: str) -> None:
        pilot = self.roster.get(container)
        started = self.roster.started_at(container)
        self.engine.remove(container)
        if pilot is None or started is None:
            return
        if pilot.shown_state == "spare":
            log.info("removed spare pilot %s", pilot.name)
            return
        runtime = max(0.0, self.wall() - started)
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


def _same_image(listed: str, current: str | None) -> bool:
    """Return whether a container's image id (as the engine lists it) is the current id of its
    image; engines differ on the ``sha256:`` prefix."""
    return current is not None and listed.removeprefix("sha256:") == current.removeprefix("sha256:")
