"""Shared machinery of the benchmarks: Plancton installations driven through planctonctl, the
engine's event stream, CPU sampling, statistics, and clean-up of everything a run made.

Times are wall-clock seconds (``time.time()``) so that they line up with the ``timeNano`` of
the engine's events, which mark when a container really started or died; a run lasts minutes,
so a clock step is unlikely, and every figure is a difference over seconds.
"""

import contextlib
import datetime
import glob
import grp
import itertools
import math
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
import psutil
import yaml

from plancton.config.schema import Config
from plancton.control.paths import STATE_NAME
from plancton.control.state import State, read_state
from plancton.core.ulimits import lowest_hard_limits
from plancton.engines.docker_api import EVENT_ALIASES, DockerPilots, event_action
from plancton.engines.spec import LABEL_INSTANCE, container_spec, instance_label
from plancton.platform.cgroups import CGROUP_ROOT, PilotCgroup
from plancton.platform.rlimits import own_hard_limits, process_hard_limits
from tests import services
from tests.installed import installation_traces, refusal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLANCTONCTL = os.path.join(REPO, "bin", "planctonctl")
#: Every container the benchmark makes itself (baselines) carries this label with the run's id.
BENCH_LABEL = "org.plancton.bench"
EVENT_ACTIONS = ("create", "start", "kill", "die", "pause", "unpause", "destroy")
API_TIMEOUT_SECONDS = 120
READY_TIMEOUT_SECONDS = 60.0
REMOVE_THREADS = 8
#: The time at the start of each line of the daemon's log.
LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
#: Settings for scenarios that measure the pilot machinery on a host whose owner is idle
#: (refill, fill, overhead): on a shared machine the owner never is, and the benchmark's own
#: Docker requests load dockerd, so these count the owner busy only while it takes the whole
#: host, never pause pilots for it, and start pilots again as soon as it is not.
IDLE_OWNER = {
    "owner_busy_percent": 100,
    "owner_idle_percent": 99,
    "cpu_pressure_percent": 100,
    "pause_delay": "1d",
    "grace_spawn": 0,
}
#: Runs the daemon with another number of concurrent create/start requests, to measure it.
CONCURRENCY_LAUNCHER = (
    "import sys\n"
    "import plancton.daemon.actions\n"
    "plancton.daemon.actions.START_CONCURRENCY = int(sys.argv[1])\n"
    "from plancton.cli.planctonctl import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


class BenchError(Exception):
    """A scenario could not be measured (a wait timed out, the daemon died...)."""


def docker_api(url: str = f"unix://{services.DOCKER_SOCKET}") -> docker.APIClient:
    """Return a low-level Docker client on an engine (the local Docker Engine by default)."""
    return docker.APIClient(base_url=url, version="auto", timeout=API_TIMEOUT_SECONDS)


def child_environment() -> dict[str, str]:
    """Return the environment of the daemons and helpers: this checkout first on the path."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, environment.get("PYTHONPATH")]))
    return environment


# -- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Given values and a fraction in [0, 1], return that percentile, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Given measurements, return a distribution-free interval that holds their population's
    median with at least the given confidence: the order statistics whose ranks a binomial
    distribution with p = 1/2 puts outside on either side with at most (1 - confidence) / 2.
    Return (nan, nan) when there are too few measurements for one (fewer than 6 at 95%).
    """
    ordered = sorted(values)
    count = len(ordered)
    tail = (1 - confidence) / 2
    below, rank = 0.0, 0
    # the largest rank k such that P(X < k) <= tail for X ~ Binomial(count, 1/2)
    while rank < count and below + math.comb(count, rank) / 2**count <= tail:
        below += math.comb(count, rank) / 2**count
        rank += 1
    if rank == 0:
        return math.nan, math.nan
    return ordered[rank - 1], ordered[count - rank]


@dataclass(frozen=True)
class Stats:
    """The median, min, max and 95th percentile of repeated measurements, and a 95% interval
    of their median where there are enough of them."""

    median: float
    low: float
    high: float
    p95: float
    count: int
    missing: int = 0
    interval: tuple[float, float] = (math.nan, math.nan)

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stats":
        """Given the measurements, return their statistics; nan stands for a repetition in
        which the figure could not be measured, and is left out (``count`` says how many were).
        """
        measured = [value for value in values if not math.isnan(value)]
        missing = len(values) - len(measured)
        if not measured:
            return cls(math.nan, math.nan, math.nan, math.nan, 0, missing)
        return cls(
            percentile(measured, 0.5),
            min(measured),
            max(measured),
            percentile(measured, 0.95),
            len(measured),
            missing,
            median_interval(measured),
        )

    @classmethod
    def paired(cls, mine: Sequence[float], base: Sequence[float]) -> "Stats":
        """Given measurements and their baselines, taken in turns in one run, return the
        statistics of their ratios."""
        return cls.of([one / other for one, other in zip(mine, base, strict=True)])

    def as_dict(self) -> dict[str, float]:
        """Return the statistics for results.json."""
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "p95": self.p95,
            "n": self.count,
            "not_measured": self.missing,
            "interval95_low": self.interval[0],
            "interval95_high": self.interval[1],
        }


@dataclass(frozen=True)
class Figure:
    """One line of the results: a measured figure, and the target it is held to, if any.

    ``stats`` holds repeated measurements; ``value`` a single one. ``met`` is None for a
    figure without a target.
    """

    what: str
    unit: str
    stats: Stats | None = None
    value: float | None = None
    target: str = ""
    met: bool | None = None

    def shown(self) -> str:
        """Return the figure as the table shows it: median [min-max] unit."""
        if self.stats is not None and self.stats.count == 0:
            return "not measured"
        if self.stats is not None:
            spread = f" [{_number(self.stats.low)}-{_number(self.stats.high)}]" if self.stats.count > 1 else ""
            low, high = self.stats.interval
            if not math.isnan(low):
                spread += f", 95% interval {_number(low)}-{_number(high)}"
            missing = f" ({self.stats.missing} of {self.stats.count + self.stats.missing} not measured)"
            return f"{_number(self.stats.median)}{spread} {self.unit}".strip() + (missing if self.stats.missing else "")
        if self.value is None or math.isnan(self.value):
            return "not measured"
        return f"{_number(self.value)} {self.unit}".strip()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Figure":
        """Given a figure as results.json holds it, return the figure."""
        stats = None
        if "median" in data:
            interval = (data.get("interval95_low", math.nan), data.get("interval95_high", math.nan))
            stats = Stats(
                data["median"], data["min"], data["max"], data["p95"], data["n"], data.get("not_measured", 0), interval
            )
        return cls(data["what"], data["unit"], stats, data.get("value"), data.get("target", ""), data.get("met"))

    def as_dict(self) -> dict[str, Any]:
        """Return the figure for results.json."""
        data: dict[str, Any] = {"what": self.what, "unit": self.unit, "target": self.target, "met": self.met}
        if self.stats is not None:
            data.update(self.stats.as_dict())
        else:
            data["value"] = self.value
        return data


def _number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if value == round(value):
        return f"{value:.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def at_most(measured: float | None, limit: float) -> bool:
    """Return whether a measured figure exists and is at most the limit."""
    return measured is not None and not math.isnan(measured) and measured <= limit


def at_least(measured: float | None, limit: float) -> bool:
    """Return whether a measured figure exists and is at least the limit."""
    return measured is not None and not math.isnan(measured) and measured >= limit


@dataclass
class ScenarioResult:
    """What one scenario measured: its figures, the settings it ran with, and any raw data."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the result for results.json."""
        return {
            "seconds": round(self.seconds, 1),
            "error": self.error,
            "settings": self.settings,
            "figures": [figure.as_dict() for figure in self.figures],
            "raw": self.raw,
        }


# -- the engine's events ------------------------------------------------------------------


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


# -- CPU sampling -------------------------------------------------------------------------


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


def log_times(path: str, text: str) -> list[float]:
    """Return the times (epoch seconds, to the millisecond) of the lines of a daemon's log file
    that contain ``text``; none when the file is not there."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if text in line]
    except OSError:
        return []
    stamps = [LOG_STAMP.match(line) for line in lines]
    return [datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in stamps if stamp]


# -- processes and installations ----------------------------------------------------------


class Plancton:
    """One Plancton installation in temporary folders, run in the foreground as users run it.

    Args:
        bench: the run this installation belongs to (for clean-up).
        name: the instance name (unique to this run).
        settings: configuration keys for config.yaml, besides the instance.
    """

    def __init__(self, bench: "Bench", name: str, settings: Mapping[str, Any]) -> None:
        self.bench = bench
        self.name = name
        self.settings = dict(settings)
        self.root = tempfile.mkdtemp(prefix=f"{name}-", dir=bench.workdir)
        self.confdir = os.path.join(self.root, "conf")
        self.rundir = os.path.join(self.root, "run")
        self.logdir = os.path.join(self.root, "log")
        self.process: subprocess.Popen[bytes] | None = None
        os.makedirs(self.confdir)
        with open(os.path.join(self.confdir, "config.yaml"), "w", encoding="utf-8") as handle:
            yaml.safe_dump({"instance": name, **self.settings}, handle)
        bench.instances.add(name)

    @property
    def cgroup(self) -> PilotCgroup:
        """The parent cgroup of this instance's pilots, as the engine names and places it
        (``/<instance>`` or ``<instance>.slice``, cgroup v1 or v2)."""
        return self.bench.pilot_cgroup(self.name)

    @property
    def locations(self) -> list[str]:
        """The planctonctl options that select this installation's folders."""
        return ["--confdir", self.confdir, "--rundir", self.rundir, "--logdir", self.logdir]

    def ctl(self, *args: str) -> str:
        """Run ``planctonctl`` on this installation; return its output.

        Raises:
            BenchError: it failed.
        """
        command = [sys.executable, PLANCTONCTL, *self.locations, *args]
        done = subprocess.run(command, capture_output=True, text=True, env=child_environment(), timeout=60, check=False)
        if done.returncode != 0:
            raise BenchError(f"planctonctl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def foreground(self, start_concurrency: int | None = None) -> None:
        """Start ``planctonctl foreground`` and wait for the daemon's first loop.

        Args:
            start_concurrency: run with this many concurrent create/start requests instead
                of the daemon's own START_CONCURRENCY.

        Raises:
            BenchError: the daemon did not come up.
        """
        if start_concurrency is None:
            command = [sys.executable, PLANCTONCTL, *self.locations, "foreground"]
        else:
            launcher = [sys.executable, "-c", CONCURRENCY_LAUNCHER, str(start_concurrency)]
            command = [*launcher, *self.locations, "foreground"]
        output = open(os.path.join(self.root, "foreground.log"), "ab")  # noqa: SIM115 - the child keeps it
        with output:
            self.process = self.bench.spawn(command, stdout=output, stderr=subprocess.STDOUT)
        self.wait_loops(1, READY_TIMEOUT_SECONDS)

    def wait_started(self, since: float, count: int, timeout: float = 60.0) -> list[Event]:
        """Wait until ``count`` pilots started at or after ``since``; return their start events.

        Raises:
            BenchError: they did not, with the daemon's own reasons.
        """
        try:
            return self.bench.events.wait(action_of(self.name, "start"), since, count, timeout, "pilot starts")
        except BenchError as error:
            why = "; ".join(self.state().why) or self.log()
            raise BenchError(f"{self.name}: {error} ({why})") from None

    def state(self) -> State:
        """Return the state the running daemon last wrote (all defaults before its first)."""
        state = read_state(os.path.join(self.rundir, STATE_NAME))
        if state is None or self.process is None or state.pid != self.process.pid:
            return State()
        return state

    def wait_loops(self, count: int, timeout: float = 30.0) -> State:
        """Wait until the daemon has run ``count`` loops in all; return its state.

        Raises:
            BenchError: it died or did not get there in time.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BenchError(f"the daemon of {self.name} exited with code {self.process.returncode}: {self.log()}")
            state = self.state()
            if state.loops >= count:
                return state
            time.sleep(0.05)
        raise BenchError(f"the daemon of {self.name} did not reach loop {count} in {timeout:.0f} s: {self.log()}")

    def log(self, lines: int = 5) -> str:
        """Return the last lines of the daemon's output, for error messages."""
        try:
            with open(os.path.join(self.root, "foreground.log"), encoding="utf-8", errors="replace") as handle:
                return " | ".join(handle.read().splitlines()[-lines:])
        except OSError:
            return ""

    def errors_logged(self) -> list[str]:
        """Return the error lines of the daemon's log so far, container ids shortened."""
        try:
            with open(os.path.join(self.logdir, "plancton.log"), encoding="utf-8", errors="replace") as handle:
                lines = [line.split(" ERROR ", 1)[1].strip() for line in handle if " ERROR " in line]
        except OSError:
            return []
        return [re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1", line) for line in lines]

    def logged_at(self, text: str) -> list[float]:
        """Return the times (epoch seconds, to the millisecond) of the daemon's log lines that
        contain ``text``."""
        return log_times(os.path.join(self.logdir, "plancton.log"), text)

    def mode_changed_at(self) -> float:
        """Return when planctonctl last wrote the mode: the moment a mode verb took effect."""
        return os.stat(os.path.join(self.rundir, "mode")).st_mtime_ns / 1e9

    def stop(self) -> None:
        """Stop the daemon by its pid (SIGTERM, SIGKILL if it lingers); pilots keep running."""
        if self.process is not None:
            self.bench.stop_process(self.process)
            self.process = None

    def remove_pilots(self) -> None:
        """Remove every container of this instance."""
        self.bench.remove_containers(instance_label(self.name))


#: What ./install sets up: its program, folders and user.
INSTALL = os.path.join(REPO, "install")
INSTALLED_PLANCTONCTL = "/opt/plancton/venv/bin/planctonctl"
INSTALLED_FOLDERS = {"confdir": "/etc/plancton", "rundir": "/run/plancton", "logdir": "/var/log/plancton"}
SERVICE_USER = "plancton"
#: The environment of a service started at boot.
BOOT_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
INSTALL_TIMEOUT_SECONDS = 900


class InstalledPlancton(Plancton):
    """Plancton to be installed on this host by ./install from this checkout, with the
    benchmark's configuration in place first, and run in the foreground as the service user,
    as the installed service runs. :meth:`install` installs it; :meth:`uninstall` removes it
    all (``--uninstall --purge``), also after a failed install.

    Raises:
        BenchError: Plancton is installed here already: the benchmark never replaces an
            installation.
    """

    def __init__(self, bench: "Bench", name: str, settings: Mapping[str, Any]) -> None:
        traces = installation_traces()
        if traces:
            raise BenchError(f"{refusal(traces)}; or run the other scenarios")
        super().__init__(bench, name, settings)
        self.confdir, self.rundir, self.logdir = (INSTALLED_FOLDERS[key] for key in ("confdir", "rundir", "logdir"))
        os.makedirs(self.confdir)
        with open(os.path.join(self.confdir, "config.yaml"), "w", encoding="utf-8") as handle:
            yaml.safe_dump({"instance": name, **self.settings}, handle)

    def install(self) -> str:
        """Run ./install, stop the service it started and remove the pilots that service
        started (each run starts its own daemon, on an empty pool); return what ./install
        printed.

        Raises:
            BenchError: ./install failed.
        """
        output = self._install()
        self.ctl("stop")
        self.remove_pilots()
        return output

    def _install(self, *options: str) -> str:
        done = subprocess.run(
            [INSTALL, *options],
            env={**BOOT_ENVIRONMENT, "HOME": "/root"},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"./install {' '.join(options)} failed: {(done.stdout + done.stderr).strip()[-500:]}")
        return done.stdout

    def foreground(self, start_concurrency: int | None = None) -> None:
        """Start the installed ``planctonctl foreground`` as the service user, with its groups,
        and wait for the daemon's first loop.

        Raises:
            BenchError: the daemon did not come up.
        """
        assert start_concurrency is None, "the installed program runs with its own concurrency"
        account = pwd.getpwnam(SERVICE_USER)
        groups = [group.gr_name for group in grp.getgrall() if SERVICE_USER in group.gr_mem]
        command = [INSTALLED_PLANCTONCTL, *self.locations, "foreground"]
        with open(os.path.join(self.root, "foreground.log"), "ab") as output:
            self.process = self.bench.spawn(
                command,
                environment=BOOT_ENVIRONMENT,
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=groups,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.wait_loops(1, READY_TIMEOUT_SECONDS)

    def uninstall(self) -> None:
        """Stop the daemon and remove the installation (``./install --uninstall --purge``)."""
        self.stop()
        self._install("--uninstall", "--purge")


class Bench:
    """One benchmark run: its engine client, events, temporary folder and clean-up.

    Everything a scenario starts goes through this object, so that :meth:`close` can stop
    and remove it, also after Ctrl-C or SIGTERM.
    """

    def __init__(
        self, quick: bool, keep_logs: bool = False, shared_host: bool = False, engine_url: str | None = None
    ) -> None:
        self.quick = quick
        self.keep_logs = keep_logs
        self.shared_host = shared_host
        #: the engine's address, when not the local Docker Engine (Podman's API service)
        self.engine_url = engine_url
        self.run_id = secrets.token_hex(3)
        self.workdir = tempfile.mkdtemp(prefix=f"plancton-bench-{self.run_id}-")
        self.api = docker_api(engine_url) if engine_url else docker_api()
        self.instances: set[str] = set()
        self.cgroup_parents: set[str] = set()
        self.baseline_tags: set[str] = set()
        self.processes: list[subprocess.Popen[bytes]] = []
        info = self.api.info()
        #: the engine's cgroup driver ("cgroupfs" or "systemd") and cgroup version (1 or 2)
        self.cgroup_driver = str(info.get("CgroupDriver") or "cgroupfs")
        self.cgroup_version = int(info.get("CgroupVersion") or 1)
        #: the hard limits Plancton bounds its pilots' by on an engine that sets its own (Podman)
        self.ulimit_ceilings: dict[str, int] = {}
        engine = DockerPilots("bench", engine_url).engine_info()
        if engine.sets_own_ulimits:
            server_limits = process_hard_limits(engine.server_pid) if engine.server_pid else {}
            self.ulimit_ceilings = lowest_hard_limits(own_hard_limits(), server_limits)
        services.ensure_busybox_image()
        self.copied_busybox = bool(engine_url) and services.copy_image("busybox:latest", str(engine_url))
        self.events = EventLog(engine_url) if engine_url else EventLog()

    def pilot_cgroup(self, name: str) -> PilotCgroup:
        """Return the parent cgroup named ``name`` as this engine makes it: with the systemd
        driver the slice ``name.slice``, with cgroupfs the folder ``/name``; its CPU time
        comes from ``cpu.stat`` on cgroup v2 and ``cpuacct.usage`` on v1."""
        return PilotCgroup(name, self.cgroup_driver, self.cgroup_version)

    def instance_name(self, scenario: str) -> str:
        """Return a unique instance name for a scenario of this run."""
        return f"bench_{self.run_id}_{scenario}"[:31]

    def plancton(self, scenario: str, settings: Mapping[str, Any]) -> Plancton:
        """Return a new Plancton installation for a scenario (not started yet). With the
        systemd driver its slice gets the idle CPU weight first, as ./install's slice unit
        gives it: systemd writes a slice's ``cpu.idle`` itself whenever it sets up the
        slice's cgroup again (for a new pilot's scope), so a value written by the daemon
        alone does not last across the scenario's repetitions."""
        engine = {"engine_url": self.engine_url} if self.engine_url else {}
        plancton = Plancton(self, self.instance_name(scenario), {**settings, **engine})
        if self.cgroup_driver == "systemd":
            command = ["systemctl", "set-property", "--runtime", plancton.cgroup.docker_parent, "CPUWeight=idle"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                raise BenchError(f"{' '.join(command)} failed: {done.stderr.strip()}")
        return plancton

    def baseline_labels(self, tag: str) -> dict[str, str]:
        """Return the labels of the benchmark's own containers for one baseline."""
        self.baseline_tags.add(tag)
        return {BENCH_LABEL: self.baseline_tag(tag)}

    def baseline_tag(self, tag: str) -> str:
        """Return the value of :data:`BENCH_LABEL` for one baseline of this run."""
        return f"{self.run_id}-{tag}"

    def baseline_cgroup(self, tag: str) -> str:
        """Return a cgroup parent for a baseline's containers (a slice with the systemd
        driver, which refuses any other parent), removed at clean-up."""
        name = f"bench_{self.run_id}_{tag}"
        self.cgroup_parents.add(name)
        return self.pilot_cgroup(name).docker_parent

    def pilot_like(self, tag: str, command: Sequence[str]) -> dict[str, Any]:
        """Return a container for a baseline: the very container Plancton makes for a pilot
        with default settings and this command (same image, user, limits and security
        options), under a cgroup parent of its own and labelled for this run.
        """
        config = Config(docker_cmd=tuple(command))
        parent = self.baseline_cgroup(tag)
        spec = container_spec(config, parent, "bench", self.run_id, time.time(), self.ulimit_ceilings)
        return {
            "image": spec.image,
            "command": spec.command,
            "user": spec.user or "",
            "labels": self.baseline_labels(tag),
            "host_config": spec.host_config,
        }

    def spawn(
        self, command: list[str], environment: Mapping[str, str] | None = None, **options: Any
    ) -> subprocess.Popen[bytes]:
        """Start a helper process, recorded so that clean-up stops it by its pid; it talks to
        this run's engine (``DOCKER_HOST``), in ``environment`` (by default this checkout's,
        :func:`child_environment`)."""
        base = child_environment() if environment is None else dict(environment)
        base |= {"DOCKER_HOST": self.engine_url} if self.engine_url else {}
        process = subprocess.Popen(command, env=base, cwd="/", **options)
        self.processes.append(process)
        return process

    def stop_process(self, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
        """Stop a process this run started: SIGTERM, then SIGKILL if it lingers."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        with contextlib.suppress(ValueError):
            self.processes.remove(process)

    def remove_containers(self, label: str) -> int:
        """Remove every container with a label (``key=value``), in parallel; return how many."""
        containers = [entry["Id"] for entry in self.api.containers(all=True, filters={"label": [label]})]

        def remove(container: str) -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self.api.remove_container(container, force=True, v=True)

        with ThreadPoolExecutor(REMOVE_THREADS) as pool:
            list(pool.map(remove, containers))
        return len(containers)

    def close(self) -> None:
        """Stop every process, remove every container and cgroup this run made."""
        for process in list(self.processes):
            self.stop_process(process)
        for instance in sorted(self.instances):
            self.remove_containers(instance_label(instance))
        for tag in sorted(self.baseline_tags):
            self.remove_containers(f"{BENCH_LABEL}={self.baseline_tag(tag)}")
        self.events.close()
        if self.copied_busybox:
            with contextlib.suppress(docker.errors.DockerException):
                self.api.remove_image("busybox:latest", force=True)
        self.api.close()
        for name in sorted(self.instances | self.cgroup_parents):
            _remove_cgroups(self.pilot_cgroup(name))
        if not self.keep_logs:
            shutil.rmtree(self.workdir, ignore_errors=True)


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


def _remove_cgroups(cgroup: PilotCgroup) -> None:
    """Remove the (empty) parent cgroup Docker and Plancton made for a name: its folders under
    every v1 controller or the v2 folder, or, with the systemd driver, its slice, which
    systemd keeps until stopped."""
    if cgroup.driver == "systemd":
        if shutil.which("systemctl"):
            for verb in ("stop", "revert"):  # revert: the runtime CPUWeight=idle of Bench.plancton
                subprocess.run(
                    ["systemctl", verb, "--quiet", cgroup.docker_parent], capture_output=True, timeout=60, check=False
                )
        return
    name = cgroup.docker_parent.lstrip("/")
    pattern = os.path.join(CGROUP_ROOT, name) if cgroup.version == 2 else os.path.join(CGROUP_ROOT, "*", name)
    for _ in range(20):
        cgroup.remove()  # with the empty cgroups a runtime left below (Podman's conmon)
        if not glob.glob(pattern):
            return
        time.sleep(0.1)


@contextlib.contextmanager
def podman_bench(bench: Bench) -> Iterator[Bench]:
    """A run like ``bench`` against rootful Podman's API service: the one answering on its
    socket, or one started here and stopped afterwards by its pid (with the cgroup Podman
    made for its conmon), so that a scenario can measure Plancton and its floor on Podman.

    Raises:
        BenchError: Podman is not installed, or its service cannot be started.
    """
    started: services.StartedProcess | None = None
    had_libpod_parent = any(name.endswith("/libpod_parent") for name in services.cgroup_names())
    if not services.docker_answers(services.PODMAN_URL):
        if shutil.which("podman") is None:
            raise BenchError("podman is not installed")
        try:
            started = services.start_podman_service(bench.workdir)
        except RuntimeError as error:
            raise BenchError(str(error).splitlines()[0]) from None
    podman = None
    try:
        podman = Bench(bench.quick, bench.keep_logs, bench.shared_host, engine_url=services.PODMAN_URL)
        yield podman
    finally:
        with deferred_signals():
            if podman is not None:
                podman.close()
            if started is not None:
                started.stop()
                if not had_libpod_parent:
                    PilotCgroup("libpod_parent").remove()


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside the block, so that clean-up runs to its end."""
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
