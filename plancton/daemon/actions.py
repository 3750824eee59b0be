"""Pilot actions on worker threads, so that the loop never waits for a pilot's vacate time.

Quick actions (starts, removals, pauses) share a small pool; stops, which may wait for a
pilot's whole vacate time, have a larger one. A pilot has at most one action under way:
another asked for meanwhile is dropped, and the loop asks again if it is still needed.
"""

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from plancton.errors import EngineUnavailable, PilotError

log = logging.getLogger(__name__)

#: How many create/start requests run at once (see docs/benchmarks.md for the measurement).
START_CONCURRENCY = 4
STOP_CONCURRENCY = 32


class ActionRunner:
    """Runs actions on pilots and new starts in thread pools, and says what is under way."""

    def __init__(self, quick_workers: int, slow_workers: int) -> None:
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._starting = 0
        self._preparing = 0
        self._quick = ThreadPoolExecutor(quick_workers, thread_name_prefix="plancton-act")
        self._slow = ThreadPoolExecutor(slow_workers, thread_name_prefix="plancton-stop")

    def act(self, container: str, action: Callable[[], None], slow: bool = False) -> None:
        """Run ``action`` on ``container`` unless an action on it is already under way.

        Errors of the engine are logged, never raised: the next loop sees the pilot as it is.
        """
        with self._lock:
            if container in self._busy:
                return
            self._busy.add(container)

        def run() -> None:
            try:
                action()
            except (PilotError, EngineUnavailable) as error:
                log.error("%s", error)
            except Exception:
                log.exception("unexpected error acting on pilot %s", container[:12])
            finally:
                with self._lock:
                    self._busy.discard(container)

        (self._slow if slow else self._quick).submit(run)

    def start(self, action: Callable[[], None], container: str | None = None) -> None:
        """Run ``action``, which starts a pilot (``container``, a spare, or a new one); it
        counts as starting until it returns. A spare with an action under way is left alone."""
        with self._lock:
            if container is not None and container in self._busy:
                return
            if container is not None:
                self._busy.add(container)
            self._starting += 1

        def done() -> None:
            self._starting -= 1
            self._busy.discard(container or "")

        self._quick.submit(self._guarded(action, "starting a pilot", done))

    def prepare(self, action: Callable[[], None]) -> None:
        """Run ``action``, which creates a spare; it counts as preparing until it returns."""
        with self._lock:
            self._preparing += 1

        def done() -> None:
            self._preparing -= 1

        self._quick.submit(self._guarded(action, "creating a spare pilot", done))

    def _guarded(self, action: Callable[[], None], what: str, done: Callable[[], None]) -> Callable[[], None]:
        """Return ``action`` with its unexpected errors logged and ``done`` called after it,
        under the lock."""

        def run() -> None:
            try:
                action()
            except Exception:
                log.exception("unexpected error %s", what)
            finally:
                with self._lock:
                    done()

        return run

    def under_way(self) -> tuple[frozenset[str], int]:
        """Return the pilots with an action under way and how many starts are."""
        with self._lock:
            return frozenset(self._busy), self._starting

    def preparing(self) -> int:
        """Return how many spares are being created."""
        with self._lock:
            return self._preparing

    def shutdown(self) -> None:
        """Drop what has not begun and wait for what has."""
        self._quick.shutdown(wait=True, cancel_futures=True)
        self._slow.shutdown(wait=True, cancel_futures=True)
