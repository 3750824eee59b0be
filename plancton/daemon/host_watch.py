"""The host watched between loops: the owner's last half second, and a wake when it changes.

A thread samples the host's CPU and memory every half second,
so that the loop decides on the owner's last moment rather than on an average since the last
loop, and wakes the loop as soon as the owner starts or stops being busy, whatever main_sleep.

Without it, an owner's work would be seen only at the next loop (up to main_sleep later), in a
sample diluted by the idle time before it.
"""

import threading
from collections.abc import Callable

from plancton.config.schema import Config
from plancton.core.policy import HostSample, owner_busy_after
from plancton.platform.host import MIN_SAMPLE_SECONDS, Sensor

#: How often the thread samples the host: the shortest interval whose CPU figures are not noise.
WATCH_SECONDS = MIN_SAMPLE_SECONDS


class HostWatch:
    """Samples the host on a thread of its own and wakes the loop when the owner changes.

    Args:
        sensor: what samples the host; only this object's thread calls it once started.
        wake: wakes the daemon's loop.
        interval: seconds between two samples.
    """

    def __init__(self, sensor: Sensor, wake: Callable[[], None], interval: float = WATCH_SECONDS) -> None:
        self.sensor = sensor
        self.wake = wake
        self.interval = interval
        self._lock = threading.Lock()
        self._latest: HostSample | None = None
        self._owner_busy = False
        self._config: Config | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sampling on the thread."""
        self._thread = threading.Thread(target=self._run, name="plancton-host", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sample(self) -> HostSample:
        """Return the latest sample of the thread, or, without a running thread (or before its
        first sample), a sample taken now."""
        with self._lock:
            latest = self._latest
        if latest is not None and self._thread is not None and self._thread.is_alive():
            return latest
        return self.sensor.sample()

    def expect(self, owner_busy: bool, config: Config) -> None:
        """Tell the watch whether the policy counts the owner busy now, and the thresholds in
        force: the first sample that says otherwise wakes the loop."""
        with self._lock:
            self._owner_busy, self._config = owner_busy, config

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self.sensor.sample()
            with self._lock:
                self._latest = sample
                config = self._config
                changed = config is not None and owner_busy_after(self._owner_busy, sample, config) != self._owner_busy
                if changed:
                    # once per change: the loop arms the watch again when it has decided, so
                    # a loop that cannot decide (the engine away) is not woken every interval
                    self._config = None
            if changed:
                self.wake()
            self._stop.wait(self.interval)
