"""Legacy pilots (Plancton 0.6's) on the same engine: listed, and removed when asked.

They are named ``plancton-worker-*``, without Plancton's labels. They are looked for at the
first loop and every few minutes (one engine request), listed in the state file for
``planctonctl status``, said once in the log, and never touched unless the configuration
says ``legacy_pilots: remove``: then each is stopped like a pilot of ours (SIGTERM, SIGKILL
after vacate_time) and removed.
"""

import functools
import logging
import time
from collections.abc import Callable

from plancton.config.schema import Config
from plancton.control.legacy import legacy_pilots_message
from plancton.engines.base import Engine, Pilot
from plancton.errors import EngineUnavailable, PilotError

log = logging.getLogger(__name__)

#: How often the engine is asked for legacy pilots.
CHECK_SECONDS = 300.0

#: Runs an action on a container in the background (skipped while one on it is under way).
Act = Callable[[str, Callable[[], None]], None]


class LegacyPilots:
    """Follows legacy pilots (Plancton 0.6's) on one engine.

    Args:
        engine: the engine of this instance's pilots.
        act: runs a stop-and-remove in the background (:meth:`Executor.act_on_other`).
        clock: a monotonic clock.
    """

    def __init__(self, engine: Engine, act: Act, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.act = act
        self.clock = clock
        #: the names of the legacy pilots found by the last look
        self.names: tuple[str, ...] = ()
        self._looked: float | None = None

    def look_again(self) -> None:
        """Look at the next :meth:`check` (after a reload, which may ask for removal)."""
        self._looked = None

    def check(self, config: Config) -> None:
        """Look for legacy pilots when due; say so when they change; remove them when
        the configuration asks. Never raises: an engine error leaves the last names in place."""
        now = self.clock()
        if self._looked is not None and now - self._looked < CHECK_SECONDS:
            return
        self._looked = now
        try:
            pilots = self.engine.legacy_pilots()
        except (EngineUnavailable, PilotError) as error:
            log.debug("cannot look for legacy pilots: %s", error)
            return
        names = tuple(sorted(pilot.name for pilot in pilots))
        if names and names != self.names and config.legacy_pilots == "keep":
            log.warning("%s", legacy_pilots_message(list(names)))
        self.names = names
        if config.legacy_pilots == "remove":
            for pilot in pilots:
                self.act(pilot.id, functools.partial(self._remove, pilot, config.vacate_time))

    def _remove(self, pilot: Pilot, vacate_seconds: float) -> None:
        log.info(
            "stopping the original Plancton's pilot %s (legacy_pilots: remove): SIGTERM, SIGKILL after %.0f s",
            *(pilot.name, vacate_seconds),
        )
        self.engine.stop(pilot.id, vacate_seconds, paused=pilot.state == "paused")
        self.engine.remove(pilot.id)
        self.names = tuple(name for name in self.names if name != pilot.name)
        log.info("removed the original Plancton's pilot %s", pilot.name)
