"""Bookkeeping of pilot starts: the start rate and the back-off after failures.

A start that the engine refuses, or a pilot that exits within ``INSTANT_EXIT_SECONDS`` of its
start without Plancton stopping it, counts as a failure. From ``FAILURES_BEFORE_BACKOFF``
failures in a row on, starts wait for a back-off that doubles up to ``MAX_BACKOFF_SECONDS``;
a pilot that runs longer resets the count.
"""

import threading
from collections import deque

from plancton.core.policy import StartHistory

INSTANT_EXIT_SECONDS = 3.0
FAILURES_BEFORE_BACKOFF = 3
FIRST_BACKOFF_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 300.0
WINDOW_SECONDS = 60.0


class StartTracker:
    """Thread-safe record of recent starts and consecutive failures (times are monotonic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: deque[float] = deque()
        self.failures = 0
        #: every failure and every start since the daemon started, for the health check after
        #: a new revision
        self.failures_total = 0
        self.starts_total = 0
        self.backoff_until = float("-inf")

    def started(self, now: float) -> None:
        """Record a pilot that started."""
        with self._lock:
            self._starts.append(now)
            self.starts_total += 1

    def failed(self, now: float) -> float:
        """Record a failure; return the back-off now in force, in seconds (0 for none)."""
        with self._lock:
            self.failures += 1
            self.failures_total += 1
            if self.failures < FAILURES_BEFORE_BACKOFF:
                return 0.0
            delay = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0 ** (self.failures - FAILURES_BEFORE_BACKOFF))
            self.backoff_until = now + delay
            return delay

    def exited(self, runtime_seconds: float, now: float) -> float:
        """Record a pilot that exited on its own; return the back-off in force (0 for none)."""
        if runtime_seconds < INSTANT_EXIT_SECONDS:
            return self.failed(now)
        with self._lock:
            self.failures = 0
        return 0.0

    def history(self, now: float, spawn_now: bool = False) -> StartHistory:
        """Return the starts of the last minute and the back-off, for the policy."""
        with self._lock:
            while self._starts and now - self._starts[0] >= WINDOW_SECONDS:
                self._starts.popleft()
            backoff = float("-inf") if spawn_now else self.backoff_until
            return StartHistory(recent_starts=tuple(self._starts), backoff_until=backoff, spawn_now=spawn_now)
