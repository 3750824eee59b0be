"""The install script run on this machine as its first real user would: a dry run, the
install itself (the daemon then runs as the plancton user and starts pilots), a second run
that changes nothing, and --uninstall, then --uninstall --purge.

The tests share one installation and run in the order written; they need root and a
machine where Plancton is not installed yet (CI's fresh one). The first one, on a machine
where no Docker Engine runs yet and the service manager cannot start one, installs from
scratch: the script starts dockerd itself, and the test stops that dockerd afterwards.
"""

import filecmp
import grp
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator

import docker
import psutil
import pytest

from plancton.platform.cgroups import PilotCgroup
from tests.conftest import STEADY_POLICY, wait_until
from tests.support import services

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_SOURCES = (".git", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".hypothesis", ".venv")
PROGRAM = "/usr/local/bin/planctonctl"  # a link into /opt/plancton/venv, on root's PATH
CONFIG = "/etc/plancton/config.yaml"
CRON_FILE = "/etc/cron.d/plancton"
UNIT_FILE = "/etc/systemd/system/plancton.service"
SLICE_FILE = "/etc/systemd/system/plancton.slice"
LOG_FILE = "/var/log/plancton/plancton.log"
INSTANCE = "plancton"  # the default configuration's
TRACES = (
    "/opt/plancton",
    "/etc/plancton",
    "/var/log/plancton",
    "/run/plancton",
    CRON_FILE,
    UNIT_FILE,
    SLICE_FILE,
    PROGRAM,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the install script runs as root"),
]


def install(checkout: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ./install as root from a checkout, in the environment a fresh login gives."""
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    environment |= {name: value for name, value in os.environ.items() if name.startswith("PIP_")}
    return subprocess.run(
        [os.path.join(checkout, "install"), *options],
        env=environment,
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def user_exists(name: str = "plancton") -> bool:
    return name in {entry.pw_name for entry in pwd.getpwall()}


def planctonctl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed planctonctl as root, with root mode's default folders."""
    return subprocess.run([PROGRAM, *args], capture_output=True, text=True, timeout=120, check=False, cwd="/")


def daemon_pid() -> int | None:
    """Return the pid of the installed daemon, as root's planctonctl status finds it."""
    done = planctonctl("status", "--json")
    return json.loads(done.stdout)["pid"] if done.returncode == 0 else None


def running_pilot_in_status() -> bool:
    """Return whether root's planctonctl status lists a running pilot."""
    status = json.loads(planctonctl("status", "--json").stdout)
    return any(pilot["state"] == "running" for pilot in status["pilots"])


def planctonctl_as_plancton(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed planctonctl as the plancton user, pointed at the daemon's run folder."""
    command = ["runuser", "-u", "plancton", "--", PROGRAM, "--rundir", "/run/plancton", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd="/")


def processes_of(uid: int) -> list[psutil.Process]:
    """Return the processes running as uid (zombies left out)."""
    found = []
    for process in psutil.process_iter(["uids", "status"]):
        if process.info["uids"] and process.info["uids"].real == uid and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def pilot_cgroups() -> list[str]:
    """Return the default instance's parent cgroups present on this host (v1 or v2)."""
    candidates = [f"/sys/fs/cgroup/{INSTANCE}", f"/sys/fs/cgroup/{INSTANCE}.slice"]
    candidates += [
        os.path.join(f"/sys/fs/cgroup/{controller}", INSTANCE) for controller in os.listdir("/sys/fs/cgroup")
    ]
    return [path for path in candidates if os.path.isdir(path)]


def engine_answers() -> bool:
    try:
        client = docker.APIClient(version="auto", timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except docker.errors.DockerException:
        return False
    finally:
        client.close()


def pilots(client: docker.APIClient) -> set[str]:
    return {entry["Id"] for entry in services.instance_containers(client, INSTANCE)}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the checkout under test, as a user would have it, that stays the same while
    the tests run (the working tree may change meanwhile; install would then upgrade).
    """
    copy = os.path.join(tmp_path_factory.mktemp("install"), "plancton")
    shutil.copytree(SOURCE, copy, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    return copy


@pytest.fixture(scope="module")
def fresh_machine(checkout: str, docker_engine: None) -> Iterator[set[str]]:
    """A machine without Plancton; yields the default instance's containers that were there
    before, and afterwards uninstalls and removes the containers the installed daemon made.
    """
    leftovers = [path for path in TRACES if os.path.lexists(path)] + (["user plancton"] if user_exists() else [])
    if leftovers:
        pytest.fail(f"Plancton is installed here already ({', '.join(leftovers)}): ./install --uninstall --purge")
    client = docker.APIClient(version="auto", timeout=60)
    before = pilots(client)
    yield before
    install(checkout, "--uninstall", "--purge")
    for container in pilots(client) - before:
        client.remove_container(container, force=True, v=True)
    client.close()


@pytest.fixture(scope="module")
def installed(checkout: str, fresh_machine: set[str]) -> subprocess.CompletedProcess[str]:
    """Plancton installed by ./install, as its first real user runs it."""
    done = install(checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_install_without_an_engine_starts_dockerd_itself(checkout: str) -> None:
    """No Docker Engine runs and no service manager can start one (no systemd; Debian's init
    script stops at its "ulimit" on these machines): ./install starts dockerd itself, the
    daemon runs as plancton, and --uninstall --purge leaves nothing of Plancton behind.
    """
    if engine_answers():
        pytest.skip("a Docker Engine runs already (this test session's): run this module alone on a fresh machine")
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd starts the Docker Engine here")
    leftovers = [path for path in TRACES if os.path.lexists(path)] + (["user plancton"] if user_exists() else [])
    assert not leftovers, f"Plancton is installed here already: {leftovers}"

    done = install(checkout)
    started = re.search(r"dockerd started \(pid (\d+)", done.stdout)
    engine = psutil.Process(int(started[1])) if started else None
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "starting dockerd myself" in done.stdout, done.stdout
        assert engine is not None and engine.name() == "dockerd"
        status = planctonctl_as_plancton("status")
        assert status.returncode == 0 and "is running" in status.stdout, status.stdout + status.stderr
        uid = pwd.getpwnam("plancton").pw_uid
        assert processes_of(uid)

        purged = install(checkout, "--uninstall", "--purge")
        assert purged.returncode == 0, purged.stdout + purged.stderr
        assert not [path for path in TRACES if os.path.lexists(path)] and not user_exists()
        assert not processes_of(uid)
        assert not pilot_cgroups()
    finally:
        if user_exists():
            install(checkout, "--uninstall", "--purge")
        if engine is not None and engine.is_running():
            engine.send_signal(signal.SIGTERM)
            engine.wait(90)


def test_dry_run_changes_nothing(checkout: str, fresh_machine: set[str]) -> None:
    done = install(checkout, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would: creating the system user plancton in the group docker" in done.stdout
    assert "would: installing Plancton" in done.stdout
    assert "would: writing the default configuration /etc/plancton/config.yaml" in done.stdout
    assert not [path for path in TRACES if os.path.lexists(path)] and not user_exists()
    workstation = install(checkout, "--workstation", "--dry-run")
    assert workstation.returncode == 0, workstation.stdout + workstation.stderr
    assert (
        "would: writing the default configuration /etc/plancton/config.yaml with input_idle: 3m run_on_battery: false"
        in workstation.stdout
    )


def test_install_runs_the_daemon_as_the_plancton_user(
    checkout: str, installed: subprocess.CompletedProcess[str], fresh_machine: set[str], docker_api: docker.APIClient
) -> None:
    account = pwd.getpwnam("plancton")
    assert account.pw_uid < 1000  # a system user
    assert "plancton" in grp.getgrnam("docker").gr_mem
    assert os.path.realpath(PROGRAM) == "/opt/plancton/venv/bin/planctonctl"
    with open("/opt/plancton/venv/pyvenv.cfg", encoding="utf-8") as handle:
        assert "home = /usr/bin\n" in handle.read()  # the distribution's interpreter
    assert filecmp.cmp(CONFIG, os.path.join(checkout, "etc", "config.yaml"), shallow=False)

    if os.path.isdir("/run/systemd/system"):
        assert subprocess.run(["systemctl", "is-enabled", "plancton"], check=False).returncode == 0
    else:
        with open(CRON_FILE, encoding="utf-8") as handle:
            assert "@reboot root" in handle.read()

    pid = daemon_pid()
    assert pid is not None, planctonctl("status").stdout
    assert psutil.Process(pid).username() == "plancton"
    as_plancton = planctonctl_as_plancton("status", "--json")
    assert as_plancton.returncode == 0, as_plancton.stdout + as_plancton.stderr
    assert json.loads(as_plancton.stdout)["pid"] == pid
    assert os.stat(LOG_FILE).st_uid == account.pw_uid

    # An administrator tunes the configuration: on this shared machine the owner is busy,
    # so lend the CPU whatever the load; root's planctonctl reaches the plancton daemon.
    with open(CONFIG, "a", encoding="utf-8") as handle:
        handle.write(STEADY_POLICY)
    assert planctonctl("reload").returncode == 0
    wait_until(lambda: pilots(docker_api) - fresh_machine, 180, "a pilot of the installed daemon")
    wait_until(running_pilot_in_status, 60, "planctonctl status showing the running pilot")


def test_second_run_changes_nothing(checkout: str, installed: subprocess.CompletedProcess[str]) -> None:
    pid = daemon_pid()
    with open(CONFIG, encoding="utf-8") as handle:
        config = handle.read()

    again = install(checkout)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to change" in again.stdout, again.stdout
    preview = install(checkout, "--dry-run")
    assert preview.returncode == 0 and "dry run: 0 change(s)" in preview.stdout, preview.stdout

    # --workstation never rewrites a configuration that is there: it says what to set
    workstation = install(checkout, "--workstation")
    assert workstation.returncode == 0, workstation.stdout + workstation.stderr
    assert "set these in it yourself if you want them: input_idle: 3m run_on_battery: false" in workstation.stdout

    assert daemon_pid() == pid
    with open(CONFIG, encoding="utf-8") as handle:
        assert handle.read() == config  # the administrator's changes are kept


def test_invalid_configuration_stops_the_script(checkout: str, installed: subprocess.CompletedProcess[str]) -> None:
    pid = daemon_pid()
    with open(CONFIG, encoding="utf-8") as handle:
        config = handle.read()
    try:
        with open(CONFIG, "a", encoding="utf-8") as handle:
            handle.write("max_dock_mem: lots\n")
        done = install(checkout)
    finally:
        with open(CONFIG, "w", encoding="utf-8") as handle:
            handle.write(config)
    assert done.returncode == 1
    assert "max_dock_mem" in done.stderr and "config.yaml is invalid" in done.stderr, done.stderr
    assert daemon_pid() == pid


def test_uninstall_keeps_the_configuration_and_purge_removes_it(
    checkout: str, installed: subprocess.CompletedProcess[str]
) -> None:
    pid = daemon_pid()
    assert pid is not None
    preview = install(checkout, "--uninstall", "--dry-run")
    assert preview.returncode == 0 and "would: stopping the daemon" in preview.stdout
    assert daemon_pid() == pid

    removed = install(checkout, "--uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not [path for path in ("/opt/plancton", CRON_FILE, PROGRAM) if os.path.lexists(path)]
    assert os.path.exists(CONFIG) and user_exists()

    uid = pwd.getpwnam("plancton").pw_uid
    purged = install(checkout, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not [path for path in TRACES if os.path.lexists(path)] and not user_exists()
    assert not processes_of(uid)
    # --purge removed the instance's pilots, and with them gone their parent cgroup
    with docker.APIClient(version="auto", timeout=60) as client:
        assert not pilots(client)
    assert not pilot_cgroups(), purged.stdout
    assert "nothing to remove" in install(checkout, "--uninstall").stdout


def test_install_with_podman_runs_pilots_under_podman(checkout: str, fresh_machine: set[str]) -> None:
    """./install --engine podman on a host without systemd: Podman's API service runs (started
    by install unless one answers), the daemon runs as plancton and reaches its socket through
    the socket's group, its pilots are Podman's, and --uninstall --purge removes the pilots and
    gives the socket back."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (tests/run installs it)")
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd's podman.socket serves Podman here")
    done = install(checkout, "--engine", "podman")
    started = re.search(r"Podman's API service started \(pid (\d+)", done.stdout)
    service = psutil.Process(int(started[1])) if started else None
    podman = docker.APIClient(base_url=services.PODMAN_URL, version="auto", timeout=60)
    copied_busybox = False
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        copied_busybox = services.copy_image("busybox:latest", services.PODMAN_URL)
        assert f"engine_url: unix://{services.PODMAN_SOCKET}" in done.stdout
        assert grp.getgrgid(os.stat(services.PODMAN_SOCKET).st_gid).gr_name == "plancton"
        assert "plancton" not in grp.getgrnam("docker").gr_mem
        with open(CONFIG, "a", encoding="utf-8") as handle:
            handle.write(STEADY_POLICY)
        assert planctonctl("reload").returncode == 0
        wait_until(lambda: pilots(podman), 180, "a pilot under Podman")
        status = planctonctl_as_plancton("status")
        assert status.returncode == 0 and "engine Podman Engine" in status.stdout, status.stdout + status.stderr

        purged = install(checkout, "--uninstall", "--purge")
        assert purged.returncode == 0, purged.stdout + purged.stderr
        assert not pilots(podman) and not user_exists()
        assert grp.getgrgid(os.stat(services.PODMAN_SOCKET).st_gid).gr_name == "root"
    finally:
        if user_exists():
            install(checkout, "--uninstall", "--purge")
        for container in pilots(podman):
            podman.remove_container(container, force=True, v=True)
        if copied_busybox:
            podman.remove_image("busybox:latest", force=True)
        podman.close()
        if service is not None and service.is_running():
            service.send_signal(signal.SIGTERM)
            service.wait(60)
            PilotCgroup("libpod_parent").remove()  # its conmon's, left by the service install started
