"""The benchmark's harness: one run's Plancton installations, driven through planctonctl as
users drive them, the helper processes and containers it starts, and the clean-up of
everything it made.

Times are wall-clock seconds (``time.time()``) so that they line up with the ``timeNano`` of
the engine's events, which mark when a container really started or died; a run lasts minutes,
so a clock step is unlikely, and every figure is a difference over seconds.
"""

import contextlib
import datetime
import glob
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any

import docker
import yaml

from bench.engine import BENCH_LABEL, docker_api
from bench.errors import BenchError
from bench.events import Event, EventLog, action_of
from plancton.config.schema import Config
from plancton.config.ulimits import lowest_hard_limits
from plancton.control.paths import STATE_NAME
from plancton.control.state import State, read_state
from plancton.engines.docker_api import DockerPilots
from plancton.engines.spec import container_spec, instance_label
from plancton.platform.cgroups import CGROUP_ROOT, PilotCgroup
from plancton.platform.rlimits import own_hard_limits, process_hard_limits
from tests.support import services
from tests.support.installed import installation_traces, refusal

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLANCTONCTL = os.path.join(REPO, "bin", "planctonctl")
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


def child_environment() -> dict[str, str]:
    """Return the environment of the daemons and helpers: this checkout first on the path."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, environment.get("PYTHONPATH")]))
    return environment


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
    def pid(self) -> int:
        """The pid of the daemon that :meth:`foreground` started (``planctonctl foreground``
        runs the daemon in its own process)."""
        assert self.process is not None, "the daemon runs only after foreground()"
        return self.process.pid

    @property
    def locations(self) -> list[str]:
        """The planctonctl options that select this installation's folders."""
        return ["--confdir", self.confdir, "--rundir", self.rundir, "--logdir", self.logdir, "--statedir", self.rundir]

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
        """Return a unique instance name for a scenario of this run (an instance name has no
        hyphen)."""
        return f"bench_{self.run_id}_{scenario.replace('-', '_')}"[:31]

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
            try:
                self.api.remove_container(container, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                # the daemon is removing it already (its spare, when it drains or stops)
                if error.status_code != HTTPStatus.CONFLICT or "in progress" not in str(error.explanation):
                    raise

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
