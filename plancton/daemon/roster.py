"""The roster of pilots: what the daemon knows of each beyond the engine's listing.

Ages come from a monotonic clock (a pilot is dated once, when first seen, from its creation
time), deaths reported by the event stream win over a listing that lags behind, and the
pilots the daemon stopped itself are remembered so that their exit is not taken for a
pilot that failed.
"""

import dataclasses
import threading
from collections import Counter

from plancton.core.policy import PilotView
from plancton.engines.base import Pilot

#: States in which the engine may still list a pilot that has just died.
_ALIVE = frozenset({"running", "restarting", "paused"})


class Roster:
    """The pilots of the last listing, their ages, deaths and our own stops (thread-safe where
    the event thread and the action workers touch it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pilots: dict[str, Pilot] = {}
        self._first_seen: dict[str, float] = {}
        self._died: dict[str, int | None] = {}
        self._stopped_by_us: set[str] = set()
        #: wall-clock start times of spares the daemon started (a pilot otherwise counts from its creation)
        self._started: dict[str, float] = {}

    def update(self, listing: list[Pilot], now: float, wall: float) -> list[Pilot]:
        """Take a new listing at monotonic time ``now`` and wall-clock time ``wall``; return
        the pilots, those that the engine reported dead marked exited."""
        with self._lock:
            died, self._died = self._died, {}
        pilots = [
            dataclasses.replace(pilot, state="exited", exit_code=died[pilot.id])
            if pilot.id in died and pilot.state in _ALIVE
            else pilot
            for pilot in listing
        ]
        with self._lock:
            # a pilot first seen now (adopted or just created) is dated once from its wall-clock
            # creation time; afterwards clock jumps cannot change its age
            self._first_seen = {
                pilot.id: self._first_seen.get(pilot.id, now - max(0.0, wall - pilot.created)) for pilot in pilots
            }
            self._started = {pilot.id: self._started[pilot.id] for pilot in pilots if pilot.id in self._started}
            self._pilots = {pilot.id: pilot for pilot in pilots}
        return pilots

    def views(
        self, now: float, in_flight: frozenset[str], starting: int, preparing: int = 0, digest: str = ""
    ) -> list[PilotView]:
        """Return what the policy sees: each pilot with its age, one placeholder for each start
        under way and one for each spare being created; a spare is fresh when its container's
        digest is ``digest``, that of a pilot created now."""
        with self._lock:
            views = [
                PilotView(
                    id=pilot.id,
                    state=pilot.state,
                    age=now - self._first_seen[pilot.id],
                    image=pilot.image,
                    stopping=pilot.id in in_flight,
                    spare=pilot.spare,
                    fresh=not pilot.spare or pilot.digest == digest,
                )
                for pilot in self._pilots.values()
            ]
        views += [PilotView(id=f"starting-{index}", state="created", age=0.0) for index in range(starting)]
        views += [
            PilotView(id=f"preparing-{index}", state="created", age=0.0, stopping=True, spare=True)
            for index in range(preparing)
        ]
        return views

    def started_spare(self, container: str, now: float, wall: float) -> None:
        """Record that a spare started at monotonic time ``now`` and wall-clock time ``wall``:
        its age and run time count from then, not from its creation."""
        with self._lock:
            self._first_seen[container] = now
            self._started[container] = wall

    def started_at(self, container: str) -> float | None:
        """Return the wall-clock time a pilot of the last listing started: its creation, or
        when the daemon started it if it was a spare; None when it is not in the listing."""
        pilot = self._pilots.get(container)
        if pilot is None:
            return None
        with self._lock:
            return self._started.get(container, pilot.created)

    def died(self, container: str, exit_code: int | None) -> None:
        """Record a death reported by the engine's event stream."""
        with self._lock:
            self._died[container] = exit_code

    def get(self, container: str) -> Pilot | None:
        """Return a pilot of the last listing, or None."""
        return self._pilots.get(container)

    def waiting_spare(self, container: str) -> bool:
        """Return whether a container was, at the last listing, a spare that waits."""
        pilot = self._pilots.get(container)
        return pilot is not None and pilot.shown_state == "spare"

    def name(self, container: str) -> str:
        """Return a pilot's name, or its short id when it is not in the last listing."""
        pilot = self._pilots.get(container)
        return pilot.name if pilot else container[:12]

    def stopping_ourselves(self, container: str) -> None:
        """Remember that the daemon stopped this pilot (its exit is not a failure)."""
        with self._lock:
            self._stopped_by_us.add(container)

    def take_stopped_by_us(self, container: str) -> bool:
        """Return whether the daemon stopped this pilot itself, and forget it."""
        with self._lock:
            ours = container in self._stopped_by_us
            self._stopped_by_us.discard(container)
        return ours

    def pilots(self) -> list[Pilot]:
        """Return the pilots of the last listing, oldest first."""
        return sorted(self._pilots.values(), key=lambda pilot: pilot.created)

    def count_by_state(self) -> dict[str, int]:
        """Return how many pilots of the last listing are in each state ("spare" for a spare
        that waits)."""
        return dict(Counter(pilot.shown_state for pilot in self._pilots.values()))

    def __len__(self) -> int:
        return len(self._pilots)
