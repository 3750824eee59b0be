"""Fixtures shared by the test suite: a real Docker Engine, rootful Podman's API service,
the busybox image, a unique Plancton instance whose containers are removed afterwards, and a
way to run planctonctl.

A test runs against the Docker Engine unless it parametrizes ``engine_name`` with
:data:`BOTH_ENGINES`, which runs it against Podman too (test ids ``[docker]``, ``[podman]``).
"""

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import psutil
import pytest

from plancton.control.paths import STATE_NAME
from plancton.control.state import State, read_state
from tests.support import installed, services
from tests.support.owner_load import OwnerLoad

#: Policy keys for tests that must not depend on the load of a shared machine: the owner
#: counts as busy only at 100% of the host, pilots are never paused for it, start at once,
#: and the loop turns fast.
STEADY_POLICY = "owner_busy_percent: 100\nowner_idle_percent: 99\npause_delay: 1h\ngrace_spawn: 0\nmain_sleep: 0.5\n"

#: Lines of the daemon's log that a failed test shows.
FAILED_LOG_LINES = 60

#: The folder of the containerd that dockerd starts and manages itself.
MANAGED_CONTAINERD = "/var/run/docker/containerd"

#: Where tests/run installed Plancton; its planctonctl is the one users run.
VENV = os.environ.get("PLANCTON_TEST_VENV", os.path.dirname(os.path.dirname(sys.executable)))


def venv_command(name: str) -> str:
    """Return the path of a command installed in the test environment."""
    path = os.path.join(VENV, "bin", name)
    return path if os.path.exists(path) else shutil.which(name) or name


def wait_until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll until ``predicate`` returns something true and return it; fail the test after
    ``timeout`` seconds."""
    try:
        return services.poll(predicate, timeout, what)
    except services.WaitTimeout as error:
        pytest.fail(str(error))


class Engine:
    """The Docker Engine of the test session, which fault tests may kill and start again."""

    def __init__(self) -> None:
        #: the folder of the log of the dockerd started here (made when one first starts)
        self.log_dir: str | None = None
        self.started: services.StartedProcess | None = None
        self.began = time.time()

    def ensure(self) -> None:
        """Start dockerd unless an engine answers already."""
        if services.docker_answers():
            return
        if os.geteuid() != 0:
            pytest.fail("no Docker Engine answers and only root can start dockerd")
        if self.log_dir is None:
            self.log_dir = engine_log_folder("plancton-dockerd-")
        try:
            self.started = services.start_dockerd(self.log_dir)
        except RuntimeError:
            # after a killed engine, its containerd may take longer to start than dockerd waits
            self.started = services.start_dockerd(self.log_dir)

    def kill(self, number: int = signal.SIGKILL) -> None:
        """Kill the running dockerd, whoever started it, and wait until it is gone; then end
        the containerd it managed, as a service manager would, so that a new dockerd can start.
        """
        for process in psutil.process_iter(["name"]):
            if process.info["name"] == "dockerd":
                process.send_signal(number)
                process.wait(60)
        for process in psutil.process_iter(["name", "cmdline"]):
            if process.info["name"] == "containerd" and MANAGED_CONTAINERD in " ".join(process.info["cmdline"] or []):
                process.terminate()
                try:
                    process.wait(30)
                except psutil.TimeoutExpired:
                    process.kill()
        self.started = None

    def stop(self) -> None:
        """Stop the dockerd this session started, if any, and end the container shims that an
        engine killed mid-start left behind (the stopped engine stopped every other)."""
        if self.started is None:
            return
        self.started.stop()
        for shim in psutil.process_iter(["cmdline", "create_time"]):
            command = " ".join(shim.info["cmdline"] or [])
            if (
                "containerd-shim" in command
                and MANAGED_CONTAINERD in command
                and shim.info["create_time"] >= self.began
            ):
                with contextlib.suppress(psutil.NoSuchProcess):
                    for process in [*shim.children(recursive=True), shim]:
                        process.kill()


#: The log folders of the engines this session started.
ENGINE_LOGS: list[str] = []


def engine_log_folder(prefix: str) -> str:
    """Make a folder for the log of an engine the session starts; it is removed at the end of
    a session without failures, and kept and named otherwise."""
    folder = tempfile.mkdtemp(prefix=prefix)
    ENGINE_LOGS.append(folder)
    return folder


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove the engines' log folders after a session without failures (last: the session's
    fixtures, which stop the engines, are torn down by then)."""
    if session.testsfailed == 0:
        for folder in ENGINE_LOGS:
            shutil.rmtree(folder, ignore_errors=True)
        ENGINE_LOGS.clear()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the engines' log folders that a session with failures kept."""
    for folder in ENGINE_LOGS:
        terminalreporter.write_line(f"the log of an engine this session started is kept in {folder}")


#: The environment variable that marks the processes a test session started.
SESSION_MARK = "PLANCTON_TEST_SESSION"


def _marked(process: psutil.Process, mark: str) -> bool:
    """Return whether a live process carries this session's mark in its environment."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE and process.environ().get(SESSION_MARK) == mark
    except (psutil.Error, OSError):
        return False


#: What the session left on the host, found while the engine still answered.
LEFT_BEHIND: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def host_left_as_found() -> Iterator[None]:
    """Fail the session when it leaves a cgroup, container, image, user or process behind."""
    # every process this session starts inherits the mark, whoever it is reparented to
    mark = secrets.token_hex(8)
    os.environ[SESSION_MARK] = mark
    before = services.HostSnapshot.take()
    yield
    services.end_orphaned_pilots(before)
    LEFT_BEHIND.extend(services.HostSnapshot.take().left_since(before, engine=False))
    left = [
        f"{process.pid} {' '.join(process.cmdline())}"
        for process in psutil.process_iter()
        if process.pid != os.getpid() and _marked(process, mark)
    ]
    if left:
        LEFT_BEHIND.append(f"processes left running: {'; '.join(left[:10])}")
    if LEFT_BEHIND:
        pytest.fail("the test suite left the host changed:\n" + "\n".join(LEFT_BEHIND), pytrace=False)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """A real Docker Engine: the running one, or a dockerd started (and stopped) here. What the
    session created in it (the busybox image) is removed before it stops, with the parent cgroup
    it made for containers started without one."""
    cgroups_before = services.cgroup_names()
    engine = Engine()
    engine.ensure()
    before = services.HostSnapshot.take()
    created_busybox = services.ensure_busybox_image()
    yield engine
    if services.docker_answers():
        if created_busybox:
            with services.engine_client() as client:
                client.remove_image("busybox:latest", force=True)
        LEFT_BEHIND.extend(line for line in services.HostSnapshot.take().left_since(before) if "cgroups" not in line)
    engine.stop()
    services.remove_engine_parent("docker", cgroups_before)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that stop the shared Docker Engine last. Stop before any test, in one line,
    when the install tests are selected on a host where Plancton is installed: they would
    replace that installation."""
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
    if os.geteuid() == 0 and any(item.path.name == "test_install.py" for item in items):
        traces = installed.installation_traces()
        if traces:
            pytest.exit(installed.refusal(traces), returncode=installed.EXIT_INSTALLED)


@pytest.fixture(scope="session")
def podman_engine(docker_engine: Engine) -> Iterator[str]:
    """Rootful Podman's API service: the one answering on its socket, or one started (and
    stopped, by its pid) here; yield its URL. The busybox image is copied into it from the
    Docker Engine and removed afterwards, with the cgroups Podman made for its conmon."""
    started: services.StartedProcess | None = None
    cgroups_before = services.cgroup_names()
    if not services.docker_answers(services.PODMAN_URL):
        if shutil.which("podman") is None:
            pytest.skip("podman is not installed (tests/run installs it)")
        if os.geteuid() != 0:
            pytest.fail("Podman's API service does not answer and only root can start the rootful one")
        started = services.start_podman_service(engine_log_folder("plancton-podman-"))
    copied_busybox = services.copy_image("busybox:latest", services.PODMAN_URL)
    yield services.PODMAN_URL
    if copied_busybox:
        with services.engine_client(url=services.PODMAN_URL) as client:
            client.remove_image("busybox:latest", force=True)
    if started is not None:
        started.stop()
        services.remove_engine_parent("libpod_parent", cgroups_before)


#: Parametrizes a test's ``engine_name`` over both engines: ``@BOTH_ENGINES``.
BOTH_ENGINES = pytest.mark.parametrize("engine_name", ["docker", "podman"])


@pytest.fixture
def engine_name() -> str:
    """The engine a test runs against: "docker", unless the test parametrizes it."""
    return "docker"


@pytest.fixture
def engine_url(engine_name: str, docker_engine: Engine, request: pytest.FixtureRequest) -> str:
    """The address of the engine under test (Podman's API service is started when needed)."""
    if engine_name == "podman":
        return str(request.getfixturevalue("podman_engine"))
    return f"unix://{services.DOCKER_SOCKET}"


@pytest.fixture
def engine_api(engine_url: str) -> Iterator[docker.APIClient]:
    """A low-level client of the engine under test, for assertions."""
    with services.engine_client(url=engine_url) as client:
        yield client


@pytest.fixture
def docker_api(docker_engine: Engine) -> Iterator[docker.APIClient]:
    """A low-level Docker client for assertions."""
    client = docker.APIClient(base_url=f"unix://{services.DOCKER_SOCKET}", version="auto", timeout=60)
    yield client
    client.close()


@pytest.fixture
def instance(docker_engine: Engine, engine_url: str) -> Iterator[str]:
    """A fresh instance name; its containers are removed after the test."""
    name = f"t{secrets.token_hex(4)}"
    yield name
    services.remove_instance(name, engine_url)


def make_user(name: str, groups: list[str]) -> pwd.struct_passwd:
    """Create a local user with a home folder (replacing a leftover one of that name)."""
    subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
    command = ["useradd", "--create-home", "--shell", "/bin/sh"]
    command += ["--groups", ",".join(groups)] if groups else []
    subprocess.run([*command, name], check=True, capture_output=True)
    return pwd.getpwnam(name)


def run_as(user: pwd.struct_passwd, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command as this user, with its own HOME, and return the finished process."""
    environment = ["env", f"HOME={user.pw_dir}", f"USER={user.pw_name}", "LC_ALL=C.UTF-8"]
    if "PYTHONPATH" in os.environ:  # the working tree under test, when it is not installed
        environment.append(f"PYTHONPATH={os.environ['PYTHONPATH']}")
    return subprocess.run(
        ["runuser", "-u", user.pw_name, "--", *environment, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )


@dataclass
class Installation:
    """A Plancton installation in temporary folders, driven through planctonctl."""

    root: str
    instance: str
    #: the engine's address written to config.yaml, or None for the default (Docker)
    engine_url: str | None = None

    @property
    def confdir(self) -> str:
        return os.path.join(self.root, "conf")

    @property
    def rundir(self) -> str:
        return os.path.join(self.root, "run")

    @property
    def logdir(self) -> str:
        return os.path.join(self.root, "log")

    @property
    def statedir(self) -> str:
        return os.path.join(self.root, "state")

    @property
    def config_file(self) -> str:
        return os.path.join(self.confdir, "config.yaml")

    def write_config(self, text: str) -> None:
        """Write config.yaml: the given YAML after this installation's instance name."""
        os.makedirs(self.confdir, exist_ok=True)
        engine = f"engine_url: {self.engine_url}\n" if self.engine_url else ""
        with open(self.config_file, "w", encoding="utf-8") as handle:
            handle.write(f"instance: {self.instance}\n{engine}{text}")

    def command(self, *args: str) -> list[str]:
        """Return the planctonctl command line for this installation's folders, then args."""
        command = [venv_command("planctonctl"), "--confdir", self.confdir, "--rundir", self.rundir]
        return [*command, "--logdir", self.logdir, "--statedir", self.statedir, *args]

    def ctl(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run planctonctl on this installation and return the finished process."""
        command = self.command(*args)
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=check, cwd="/")

    def state(self) -> State:
        """Return the state that the daemon writes each loop (all defaults before the first)."""
        return read_state(os.path.join(self.rundir, STATE_NAME)) or State()

    def status(self) -> dict[str, Any]:
        """Return ``planctonctl status --json`` as a dict."""
        return dict(json.loads(self.ctl("status", "--json").stdout))

    def log(self) -> str:
        """Return the daemon's log so far."""
        try:
            with open(os.path.join(self.logdir, "plancton.log"), encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on its test, so that fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def installation(
    instance: str, engine_name: str, engine_url: str, tmp_path: "os.PathLike[str]", request: pytest.FixtureRequest
) -> Iterator[Installation]:
    """A Plancton installation in a temporary folder, on the engine under test; its daemon is
    stopped afterwards. When the test failed, the end of the daemon's log and what its pilots
    last wrote are printed (pytest shows them with the failure)."""
    setup = Installation(
        root=str(tmp_path), instance=instance, engine_url=engine_url if engine_name != "docker" else None
    )
    yield setup
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        tail = setup.log().splitlines()[-FAILED_LOG_LINES:]
        print(f"the daemon's log, last {FAILED_LOG_LINES} lines:", *tail, sep="\n")
        print(f"what the pilots of {instance} last wrote:\n{services.pilot_output(instance, engine_url)}")
    setup.ctl("stop", "--timeout", "20")


@pytest.fixture
def owner_load() -> Iterator[OwnerLoad]:
    """The owner's CPU load; its busy loops are stopped afterwards."""
    load = OwnerLoad()
    yield load
    load.stop()


def assert_pilots_gave_way(log: str, reclaim: str) -> None:
    """Check that a daemon's log says why its pilots went: ``planctonctl force-stop``, or the
    owner's load (any other ``reclaim``), for which they were paused and then stopped."""
    if reclaim == "force-stop":
        assert "(force-stop)" in log
    else:
        # a pilot starved by the lowest CPU weight may refuse to freeze and is held instead
        assert ("paused pilot" in log or "could not be frozen" in log) and "(owner reclaim)" in log
