"""etc/plancton.service: systemd accepts it, its folders are root mode's, and its command line
runs the daemon as the unprivileged plancton user, reaching Docker through the docker group.

No systemd runs on the test machines, so the daemon is started here the way systemd would:
the unit's ExecStart as its User and Group with its SupplementaryGroups and no new
privileges, with a notification socket for Type=notify, and ExecReload and the stop signal
sent as systemd sends them.
"""

import grp
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import psutil
import pytest

from plancton.control.paths import resolve
from plancton.engines.spec import instance_label
from tests.conftest import STEADY_POLICY, venv_command, wait_until
from tests.support.services import DOCKER_SOCKET

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "etc", "plancton.service")
INSTALLED_PROGRAM = "/opt/plancton/venv/bin/planctonctl"


def unit_settings(path: str = UNIT) -> dict[str, list[str]]:
    """Return every ``Key=value`` of a unit file, keys in their sections as "Section.Key"."""
    settings: dict[str, list[str]] = {}
    section = ""
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif line and not line.startswith(("#", ";")):
                name, _, value = line.partition("=")
                settings.setdefault(f"{section}.{name}", []).append(value)
    return settings


SETTINGS = unit_settings()


def setting(name: str) -> str:
    """Return the one value of a [Service] setting."""
    (value,) = SETTINGS[f"Service.{name}"]
    return value


def exec_start() -> list[str]:
    """Return the unit's ExecStart as an argument list."""
    return shlex.split(setting("ExecStart"))


def option(arguments: list[str], name: str) -> str:
    """Return the value that follows an option in an argument list."""
    return arguments[arguments.index(name) + 1]


def test_systemd_accepts_the_unit(tmp_path: "os.PathLike[str]") -> None:
    # systemd-analyze checks that ExecStart's program exists: point it at the test
    # environment's planctonctl, as the install script points it at the one it installed
    program = venv_command("planctonctl")
    assert os.path.isabs(program), "planctonctl is not installed in the test environment"
    with open(UNIT, encoding="utf-8") as handle:
        text = handle.read()
    assert text.count(f"ExecStart={INSTALLED_PROGRAM} ") == 1
    copy = os.path.join(tmp_path, "plancton.service")
    with open(copy, "w", encoding="utf-8") as handle:
        handle.write(text.replace(INSTALLED_PROGRAM, program))
    verified = subprocess.run(
        ["systemd-analyze", "verify", copy], check=False, capture_output=True, text=True, timeout=120
    )
    output = verified.stdout + verified.stderr
    assert verified.returncode == 0, output
    assert "plancton.service" not in output, output  # no warning either (unknown keys are only warnings)


def test_unit_uses_root_modes_folders_and_is_hardened() -> None:
    arguments = exec_start()
    defaults = resolve(user_mode=False)
    for name, default in (
        ("--confdir", defaults.confdir),
        ("--rundir", defaults.rundir),
        ("--logdir", defaults.logdir),
        ("--statedir", defaults.statedir),
    ):
        # "planctonctl status" run by root without options finds the unit's daemon
        assert os.path.realpath(option(arguments, name)) == os.path.realpath(default)
    assert arguments[-1] == "foreground"
    assert setting("User") == "plancton" and setting("SupplementaryGroups") == "docker"
    assert setting("Type") == "notify" and int(setting("WatchdogSec")) >= 60
    assert setting("Restart") == "on-failure"
    assert shlex.split(setting("ExecReload"))[1:] == ["-HUP", "$MAINPID"]
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectControlGroups"):
        assert setting(hardening) == "yes", hardening
    assert setting("ProtectSystem") == "strict"
    assert setting("CapabilityBoundingSet") == ""
    assert "Service.PrivateUsers" not in SETTINGS  # it would map the docker group away


@pytest.fixture(scope="module")
def service_user() -> Iterator[pwd.struct_passwd]:
    """The unit's User: the installed one, or a system user made here (without the docker
    group, which the unit's SupplementaryGroups gives) and removed afterwards.
    """
    name = setting("User")
    made_here = name not in {entry.pw_name for entry in pwd.getpwall()}
    if made_here:
        options = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        subprocess.run(["useradd", *options, "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    yield pwd.getpwnam(name)
    if made_here:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@dataclass
class ServiceFolders:
    """The unit's folders, in a temporary place so as not to touch a real installation."""

    root: str

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def command(self) -> list[str]:
        """The unit's ExecStart with the test environment's planctonctl and these folders."""
        arguments = exec_start()
        assert arguments[0] == INSTALLED_PROGRAM
        arguments[0] = venv_command("planctonctl")
        for name in ("confdir", "rundir", "logdir", "statedir"):
            arguments[arguments.index(f"--{name}") + 1] = self.path(name)
        return arguments

    def log(self) -> str:
        try:
            with open(os.path.join(self.path("logdir"), "plancton.log"), encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""


@pytest.fixture
def folders(service_user: pwd.struct_passwd, instance: str) -> Iterator[ServiceFolders]:
    """A config folder owned by root and run, log and state folders owned by the service user,
    as systemd's ConfigurationDirectory, RuntimeDirectory, LogsDirectory and StateDirectory
    make them.
    """
    root = tempfile.mkdtemp(prefix="plancton-unit-")
    os.chmod(root, 0o755)
    made = ServiceFolders(root)
    os.mkdir(made.path("confdir"), 0o755)
    with open(os.path.join(made.path("confdir"), "config.yaml"), "w", encoding="utf-8") as handle:
        handle.write(f"instance: {instance}\n{STEADY_POLICY}max_docks: 1\ndocker_cmd: [sleep, '60']\n")
    for name in ("rundir", "logdir", "statedir"):
        os.mkdir(made.path(name), 0o755)
        os.chown(made.path(name), service_user.pw_uid, service_user.pw_gid)
    yield made
    shutil.rmtree(root)


def run_as_service(
    user: pwd.struct_passwd, command: list[str], groups: list[str], **extra: str
) -> subprocess.Popen[str]:
    """Start a command as systemd would for the unit: its user, its groups, no new privileges,
    the unit's Environment= and a service's minimal environment.
    """
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": user.pw_dir}
    environment |= {"USER": user.pw_name, "LOGNAME": user.pw_name, **extra}
    environment |= dict(value.split("=", 1) for value in SETTINGS.get("Service.Environment", []))
    if "PYTHONPATH" in os.environ:  # the working tree under test, when it is not installed
        environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
    identity = [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}"]
    identity += [f"--groups={','.join(groups)}"] if groups else ["--clear-groups"]
    return subprocess.Popen(
        ["setpriv", *identity, "--no-new-privs", "--", *command],
        env=environment,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> int:
    """Stop a process the test started and return its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def test_docker_socket_is_reachable_through_the_docker_group_only() -> None:
    info = os.stat(DOCKER_SOCKET)
    assert grp.getgrgid(info.st_gid).gr_name == "docker"
    assert stat.S_IMODE(info.st_mode) & 0o007 == 0


@pytest.mark.docker
def test_unit_command_runs_the_daemon_as_the_plancton_user(
    service_user: pwd.struct_passwd, folders: ServiceFolders, instance: str, docker_api: docker.APIClient
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = folders.path("notify")
    notify.bind(notify_path)
    os.chmod(notify_path, 0o777)
    notify.settimeout(120)
    groups = setting("SupplementaryGroups").split()
    daemon = run_as_service(service_user, folders.command(), groups, NOTIFY_SOCKET=notify_path)
    try:
        assert "READY=1" in notify.recv(4096).decode().split("\n"), folders.log()
        assert psutil.Process(daemon.pid).uids().real == service_user.pw_uid
        running = {"label": [instance_label(instance)], "status": "running"}
        wait_until(
            lambda: docker_api.containers(filters=running),
            timeout=120,
            what="a pilot started by the daemon running as the plancton user",
        )
        assert len(docker_api.containers(filters=running)) == 1
        assert "WATCHDOG=1" in notify.recv(4096).decode().split("\n")

        reload = shlex.split(setting("ExecReload").replace("$MAINPID", str(daemon.pid)))
        subprocess.run(reload, check=True, timeout=30)
        wait_until(lambda: "SIGHUP" in folders.log(), timeout=60, what="the reload in the log")
    finally:
        code = stop(daemon)
        notify.close()
    assert code == 0, daemon.stderr.read() if daemon.stderr else ""
    assert "running as root" not in folders.log()


@pytest.mark.docker
def test_unit_command_without_the_docker_group_fails_clearly(
    service_user: pwd.struct_passwd, folders: ServiceFolders
) -> None:
    daemon = run_as_service(service_user, folders.command(), groups=[])
    try:
        _, errors = daemon.communicate(timeout=120)
    finally:
        stop(daemon)
    assert daemon.returncode == 1
    assert "permission" in errors.lower() and "docker" in errors.lower(), errors
