"""The engine's container events, recorded in a background thread, and what a scenario reads
from them: matchers, waits, and the containers running over time.

Times are wall-clock seconds (the ``timeNano`` of each event), which mark when a container
really started or died.
"""

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.engine import BENCH_LABEL, docker_api
from bench.errors import BenchError
from plancton.engines.docker_api import EVENT_ALIASES, event_action
from plancton.engines.spec import LABEL_INSTANCE
from tests.support import services

EVENT_ACTIONS = ("create", "start", "kill", "die", "pause", "unpause", "destroy")


@dataclass(frozen=True)
class Event:
    """One container event: when the engine says it happened, what, to which container."""

    time: float
    action: str
    container: str
    attributes: Mapping[str, str]


class EventLog:
    """Records the engine's container events in a background thread, for scenarios to wait on.

    The subscription is open when the constructor returns, so no later event is missed.
    Podman's names of events (``died``, ``remove``) are asked for too and read as Docker's.
    """

    def __init__(self, url: str = f"unix://{services.DOCKER_SOCKET}") -> None:
        self._api = docker_api(url)
        actions = [*EVENT_ACTIONS, *EVENT_ALIASES]
        self._stream = self._api.events(decode=True, filters={"type": ["container"], "event": actions})
        self._events: list[Event] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._follow, name="bench-events", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for raw in self._stream:
                actor = raw.get("Actor") or {}
                event = Event(
                    time=int(raw.get("timeNano", 0)) / 1e9,
                    action=event_action(raw),
                    container=str(actor.get("ID", raw.get("id", ""))),
                    attributes=dict(actor.get("Attributes") or {}),
                )
                with self._changed:
                    self._events.append(event)
                    self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def matching(self, match: Callable[[Event], bool], since: float = 0.0, until: float = math.inf) -> list[Event]:
        """Return the events so far that match, between two times."""
        with self._changed:
            return [event for event in self._events if since <= event.time <= until and match(event)]

    def wait(
        self,
        match: Callable[[Event], bool],
        since: float,
        count: int = 1,
        timeout: float = 60.0,
        what: str = "events",
    ) -> list[Event]:
        """Wait until ``count`` matching events happened at or after ``since``; return them.

        Raises:
            BenchError: they did not happen within ``timeout`` seconds (naming ``what``).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [event for event in self._events if event.time >= since and match(event)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BenchError(f"waited {timeout:.0f} s for {count} {what}, saw {len(found)}")
                self._changed.wait(min(left, 1.0))

    def close(self) -> None:
        """End the subscription."""
        with contextlib.suppress(Exception):
            self._stream.close()
        self._api.close()
        self._thread.join(timeout=5)


def action_of(instance: str, *actions: str) -> Callable[[Event], bool]:
    """Return a matcher of the given actions on the pilots of a Plancton instance."""
    return lambda event: event.action in actions and event.attributes.get(LABEL_INSTANCE) == instance


def action_of_baseline(tag: str, *actions: str) -> Callable[[Event], bool]:
    """Return a matcher of the given actions on the benchmark's own containers with a tag."""
    return lambda event: event.action in actions and event.attributes.get(BENCH_LABEL) == tag


def _follow_state(states: dict[str, str], event: Event) -> bool:
    """Apply one event to the states of a container group; return whether it changed one."""
    if event.action in ("start", "unpause"):
        states[event.container] = "running"
    elif event.action == "pause":
        states[event.container] = "paused"
    elif event.action in ("die", "destroy"):
        states.pop(event.container, None)
    else:
        return False
    return True


def running_over_time(events: Sequence[Event]) -> list[tuple[float, int, int]]:
    """Given a container group's events in order, return (time, running, paused) after each."""
    states: dict[str, str] = {}
    series = []
    for event in events:
        if _follow_state(states, event):
            values = list(states.values())
            series.append((event.time, values.count("running"), values.count("paused")))
    return series


def running_at(events: Sequence[Event], when: float) -> set[str]:
    """Given a container group's events in order, return the containers running at a time."""
    states: dict[str, str] = {}
    for event in events:
        if event.time > when:
            break
        _follow_state(states, event)
    return {container for container, state in states.items() if state == "running"}
