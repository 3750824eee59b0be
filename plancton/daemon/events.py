"""The event thread: a pilot's death, seen in the engine's event stream, wakes the loop.

A pilot's death wakes the loop at once, and a replacement starts within a second instead of
at the next loop.
"""

import logging
import threading
import time
from collections.abc import Callable

from plancton.daemon.roster import Roster
from plancton.engines.base import Engine
from plancton.errors import EngineUnavailable, PilotError

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 30.0
WAKING_EVENTS = frozenset({"die", "destroy", "oom"})


class EventWatcher:
    """Follows one engine's events for the pilots of one instance, on a thread of its own.

    Args:
        engine: the engine whose events to follow.
        roster: told of every pilot's death.
        wake: set when an event should wake the loop.
        wall: the wall clock, to replay what happened while the stream was down.
    """

    def __init__(
        self, engine: Engine, roster: Roster, wake: threading.Event, wall: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.roster = roster
        self.wake = wake
        self.wall = wall
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="plancton-events", daemon=True)

    def start(self) -> None:
        """Start following events."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following events and wait (briefly) for the thread to end."""
        self._stopping.set()
        self.engine.close_events()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _follow(self) -> None:
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
            delay = min(delay * 2, MAX_RETRY_SECONDS)
            self.wake.set()

    def _on_event(self, action: str, container: str, exit_code: int | None) -> None:
        if action == "die":
            # the engine's listing may still say "running" for a moment after this event
            self.roster.died(container, exit_code)
        if action in WAKING_EVENTS:
            self.wake.set()
