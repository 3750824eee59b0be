"""CPU sampling: cumulative CPU seconds of the pilots' cgroup, the whole host and the owner's
processes, read in a background thread, and the cores and seconds used between readings."""

import contextlib
import glob
import itertools
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from plancton.platform.cgroups import CGROUP_ROOT, PilotCgroup


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU seconds at one instant: the pilots, the whole host, the owner's processes."""

    time: float
    pilots: float
    host_busy: float
    owner: float


def host_busy_seconds() -> float:
    """Return the CPU seconds the host spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return sum(times) - idle - guest


class CpuSampler:
    """Reads the pilots' cgroup, the host's CPU and the owner's processes every ``interval``.

    Args:
        cgroup: the parent cgroup of the instance's pilots (cpuacct.usage on cgroup v1, the
            usage_usec of cpu.stat on v2).
        interval: seconds between readings.
    """

    def __init__(self, cgroup: PilotCgroup, interval: float = 0.05) -> None:
        self.cgroup = cgroup
        self.interval = interval
        self.readings: list[CpuReading] = []
        self._owner_seconds: dict[int, float] = {}
        self._owner_pids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add_owner(self, pid: int) -> None:
        """Count a process as the owner's from now on."""
        with self._lock:
            self._owner_pids.add(pid)
            self._owner_seconds.setdefault(pid, 0.0)

    def _owner_total(self) -> float:
        with self._lock:
            pids = list(self._owner_pids)
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                # gone: keep its last reading
                with self._lock:
                    self._owner_pids.discard(pid)
                continue
            self._owner_seconds[pid] = times.user + times.system
        return sum(self._owner_seconds.values())

    def read(self) -> CpuReading:
        """Return a reading now."""
        pilots = self.cgroup.cpu_seconds()
        return CpuReading(time.time(), math.nan if pilots is None else pilots, host_busy_seconds(), self._owner_total())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.readings.append(self.read())
            self._stop.wait(self.interval)

    def between(self, start: float, end: float) -> list[CpuReading]:
        """Return the readings taken between two times."""
        return [reading for reading in self.readings if start <= reading.time <= end]


def cores(before: CpuReading, after: CpuReading) -> tuple[float, float, float]:
    """Given two readings, return the cores used in between by pilots, owner and whole host."""
    elapsed = max(1e-9, after.time - before.time)
    return (
        (after.pilots - before.pilots) / elapsed,
        (after.owner - before.owner) / elapsed,
        (after.host_busy - before.host_busy) / elapsed,
    )


def pilot_seconds_between(readings: Sequence[CpuReading], start: float, end: float) -> float:
    """Return the pilots' CPU seconds between two times, from the readings nearest to them."""
    inside = [reading for reading in readings if start <= reading.time <= end]
    if len(inside) < 2:
        return math.nan
    return inside[-1].pilots - inside[0].pilots


def other_seconds_between(readings: Sequence[CpuReading], start: float, end: float) -> float:
    """Return the CPU seconds that neither the pilots nor the owner used between two times: the
    engine's, the daemon's and everybody else's. Intervals without a reading of the pilots'
    cgroup (before its first pilot or after its last) count no pilot CPU."""
    inside = [reading for reading in readings if start <= reading.time <= end]
    if len(inside) < 2:
        return math.nan
    pilots = sum(
        after.pilots - before.pilots
        for before, after in itertools.pairwise(inside)
        if not (math.isnan(before.pilots) or math.isnan(after.pilots))
    )
    return (inside[-1].host_busy - inside[0].host_busy) - (inside[-1].owner - inside[0].owner) - pilots


def process_cpu_seconds(pid: int) -> float:
    """Return a process's CPU time so far, all its threads, with microsecond precision where the
    kernel gives ``se.sum_exec_runtime`` (else the 10 ms ticks of /proc/PID/stat).
    """
    total, found = 0.0, False
    for path in glob.glob(f"/proc/{pid}/task/*/sched"):
        with contextlib.suppress(OSError), open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("se.sum_exec_runtime"):
                    total += float(line.split(":")[1]) / 1000
                    found = True
                    break
    if found:
        return total
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def parent_cpu_idle(cgroup: PilotCgroup) -> str | None:
    """Return the ``cpu.idle`` of a parent cgroup on cgroup v2 ("1": the pilots run only on
    CPU time no one else wants), or None where there is none to read."""
    if cgroup.version != 2:
        return None
    try:
        with open(os.path.join(CGROUP_ROOT, cgroup.docker_parent.lstrip("/"), "cpu.idle"), encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None
