"""Signals: handlers only record them and wake the loop, which acts on them.

Like Supervisor's ``SignalReceiver``: no engine or network call ever runs inside a handler.
"""

import signal
import threading
from types import FrameType

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class SignalReceiver:
    """Records signals for the loop to act on, and wakes it."""

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
