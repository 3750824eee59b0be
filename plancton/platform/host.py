"""Measurements of the host: CPU busy in total and by the pilots, memory, and pressure."""

import os
import socket
import time
from typing import Protocol

import psutil

from plancton.config.schema import HostFacts
from plancton.core.policy import HostSample
from plancton.platform.cgroups import PilotCgroup

PRESSURE_FOLDER = "/proc/pressure"
MIN_SAMPLE_SECONDS = 0.5


def host_facts(labels: frozenset[str] = frozenset()) -> HostFacts:
    """Given the labels this node was given, return the host figures that ``max_docks``
    expressions may use and that overlays select nodes by (the host name as ``hostname``
    prints it)."""
    return HostFacts(
        ncpus=psutil.cpu_count() or 1,
        ram_bytes=psutil.virtual_memory().total,
        swap_bytes=psutil.swap_memory().total,
        hostname=socket.gethostname(),
        labels=labels,
    )


def systemd_runs() -> bool:
    """Return whether systemd manages this host."""
    return os.path.isdir("/run/systemd/system")


def read_pressure(resource: str, kind: str, folder: str = PRESSURE_FOLDER) -> float | None:
    """Given "cpu" or "memory" and "some" or "full", return its avg10 percent, or None."""
    try:
        with open(os.path.join(folder, resource), encoding="ascii") as handle:
            for line in handle:
                fields = line.split()
                if fields and fields[0] == kind:
                    return float(dict(item.split("=", 1) for item in fields[1:])["avg10"])
    except (OSError, ValueError, KeyError):
        return None
    return None


class Sensor(Protocol):
    """What samples the host for the loop."""

    def sample(self) -> HostSample:
        """Return the host's CPU use since the last sample, and its memory now."""


class HostSensor:
    """Samples the host's CPU and memory; each sample covers the time since the previous one.

    Args:
        cgroup: the parent cgroup of the pilots, whose CPU accounting gives their share.
    """

    def __init__(self, cgroup: PilotCgroup) -> None:
        self.cgroup = cgroup
        self.ncpus = psutil.cpu_count() or 1
        self._last_times = psutil.cpu_times()._asdict()
        self._last_pilots = cgroup.cpu_seconds()
        self._last_clock = time.monotonic()
        self._last_sample: HostSample | None = None
        self._myself = psutil.Process()
        self._last_own = self._own_seconds()

    def sample(self) -> HostSample:
        """Return the host's CPU use since the last sample, and its memory now.

        CPU figures over a very short interval are noise, so a sample asked for sooner than
        ``MIN_SAMPLE_SECONDS`` after the previous one repeats it (the first one waits).
        """
        elapsed = time.monotonic() - self._last_clock
        if elapsed < MIN_SAMPLE_SECONDS:
            if self._last_sample is not None:
                return self._last_sample
            time.sleep(MIN_SAMPLE_SECONDS - elapsed)
        times = psutil.cpu_times()._asdict()
        pilots = self.cgroup.cpu_seconds()
        own = self._own_seconds()
        clock = time.monotonic()
        busy_cores = self._busy_fraction(self._last_times, times) * self.ncpus
        pilots_cores = 0.0
        elapsed = clock - self._last_clock
        if pilots is not None and self._last_pilots is not None and elapsed > 0:
            pilots_cores = max(0.0, pilots - self._last_pilots) / elapsed
        own_cores = max(0.0, own - self._last_own) / elapsed if elapsed > 0 else 0.0
        self._last_times, self._last_pilots, self._last_clock, self._last_own = times, pilots, clock, own
        self._last_sample = HostSample(
            ncpus=self.ncpus,
            busy_cores=busy_cores,
            pilots_cores=min(pilots_cores, float(self.ncpus)),
            available_bytes=psutil.virtual_memory().available,
            cpu_pressure=read_pressure("cpu", "some"),
            memory_pressure=read_pressure("memory", "full"),
            own_cores=min(own_cores, float(self.ncpus)),
        )
        return self._last_sample

    def _own_seconds(self) -> float:
        """Plancton's own CPU time so far (all its threads)."""
        times = self._myself.cpu_times()
        return float(times.user + times.system)

    @staticmethod
    def _busy_fraction(before: dict[str, float], after: dict[str, float]) -> float:
        """Given two readings of ``cpu_times``, return the fraction of CPU time between them
        that was neither idle nor waiting for input/output."""

        def idle(times: dict[str, float]) -> float:
            return times.get("idle", 0.0) + times.get("iowait", 0.0)

        def total(times: dict[str, float]) -> float:
            # guest time is already counted in user time on Linux
            return sum(times.values()) - times.get("guest", 0.0) - times.get("guest_nice", 0.0)

        elapsed = total(after) - total(before)
        if elapsed <= 0:
            return 0.0
        return min(1.0, max(0.0, 1.0 - (idle(after) - idle(before)) / elapsed))
