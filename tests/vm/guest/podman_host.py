"""Plancton on Podman on a modern host (systemd 257, cgroup v2, Podman 5 with its systemd cgroup
manager and crun), as its administrator and an ordinary user would see it. Runs inside the VM
tier's guest (tests/vm/run) as root, after modern_host.py's tests before the reboot, on the same
installation: the daemon is switched to rootful Podman by ``./install --engine podman`` and
switched back to the Docker Engine at the end, for the tests after the reboot.

Then an ordinary user runs it in user mode on rootless Podman: the user's own API socket
(``systemctl --user start podman.socket``), a service manager kept by ``loginctl
enable-linger``, and the CPU controller delegated to it (systemd's default for user@.service).

The tests run in the order written and share one installation and one user.
"""

import grp
import json
import os
import pwd
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.owner_load import OwnerLoad
from tests.vm.guest.modern_host import (
    CONFIG,
    DOCKER_SOCKET,
    PAUSE_DELAY,
    PILOTS,
    SLICE,
    SLICE_FOLDER,
    TEST_CONFIG,
    UNIT_FILE,
    docker_get,
    install,
    journal,
    main_pid,
    pilot_ids,
    read,
    run,
    running_pilots,
    short_ids,
    status,
    status_pilots,
    systemctl,
    wait_until,
)

PODMAN_SOCKET = "/run/podman/podman.sock"
PODMAN_DROPIN = "/etc/systemd/system/podman.socket.d/plancton.conf"
BUSYBOX_TAR = "/opt/vmtest/busybox.tar"
CGROUP_ROOT = "/sys/fs/cgroup"
# Rootful pilots are paused, resumed before grace_kill, then paused and stopped; rootless ones
# are stopped soon after they are paused.
GRACE_KILL = 10
PODMAN_CONFIG = (
    TEST_CONFIG.replace("grace_kill: 10s", f"grace_kill: {GRACE_KILL}s") + f"engine_url: unix://{PODMAN_SOCKET}\n"
)
USER_GRACE_KILL = 10
USER = "vmtest-pilots"
# The guest has no network to give a rootless container (pasta needs one): pilots that only
# burn CPU need none.
USER_CONFIG = (
    TEST_CONFIG.replace("grace_kill: 10s", f"grace_kill: {USER_GRACE_KILL}s")
    + "engine_url: unix://{socket}\nnetwork_mode: none\n"
)
NOT_DELEGATED = "the CPU controller is not delegated"


# -- helpers ------------------------------------------------------------------------------------


def process_cgroup(container: str, engine: str) -> str:
    """The cgroup folder of a running container's main process, as /proc tells it."""
    pid = docker_get(f"/containers/{container}/json", engine)["State"]["Pid"]
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        if line.startswith("0::"):
            return CGROUP_ROOT + line[3:]
    pytest.fail(f"no unified cgroup in /proc/{pid}/cgroup")


def limit(folder: str, name: str, top: str) -> str:
    """The limit a cgroup setting puts on a folder: the first one set (not "max") from the folder
    up to the one below top, or "max"."""
    while folder.startswith(top + "/"):
        path = os.path.join(folder, name)
        if os.path.exists(path) and not read(path).startswith("max"):
            return read(path)
        folder = os.path.dirname(folder)
    return "max"


def check_limits(folder: str, top: str) -> None:
    """Assert the test configuration's caps (cpus_per_dock, max_dock_mem and _swap, pids_limit)."""
    assert limit(folder, "cpu.max", top) == "50000 100000"
    assert limit(folder, "memory.max", top) == str(128 * 2**20)
    assert limit(folder, "memory.swap.max", top) == str(64 * 2**20)
    assert limit(folder, "pids.max", top) == "64"


def frozen(folder: str) -> bool:
    """Whether the kernel reports a cgroup frozen (a cgroup gone with its container is not)."""
    events = f"{folder}/cgroup.events"
    return os.path.exists(events) and "frozen 1" in read(events).splitlines()


def paused(pilots: dict[str, str], engine: str) -> bool:
    """Whether every pilot (id: its process's cgroup) is frozen and paused for the engine."""
    return all(
        frozen(folder) and docker_get(f"/containers/{pilot}/json", engine)["State"]["Paused"]
        for pilot, folder in pilots.items()
    )


def each_paused(pilots: dict[str, str], engine: str, timeout: float) -> None:
    """Wait until every pilot has been seen paused (frozen and paused for the engine), each in
    its turn: with room left for some, the daemon pauses them one by one, and may stop the first
    (grace_kill) before it pauses the last."""
    seen: set[str] = set()

    def all_seen() -> bool:
        for pilot, folder in pilots.items():
            details = docker_get(f"/containers/{pilot}/json", engine) if frozen(folder) else None
            if details is not None and details["State"]["Paused"]:
                seen.add(pilot)
        return seen == set(pilots)

    wait_until(all_seen, timeout, "each pilot paused (frozen, State.Paused)")


def running_thawed(pilots: dict[str, str], engine: str) -> bool:
    """Whether every pilot runs, neither paused for the engine nor frozen."""
    states = [docker_get(f"/containers/{pilot}/json", engine)["State"] for pilot in pilots]
    return all(state["Running"] and not state["Paused"] for state in states) and not any(
        frozen(folder) for folder in pilots.values()
    )


def stopped(pilots: dict[str, str], engine: str) -> bool:
    """Whether no pilot runs any more (gone, or exited)."""
    return all(
        (details := docker_get(f"/containers/{pilot}/json", engine)) is None or not details["State"]["Running"]
        for pilot in pilots
    )


def remove_containers(containers: set[str], engine: str) -> None:
    for container in containers:
        docker_get(f"/containers/{container}?force=1&v=1", engine, method="DELETE")


# -- rootful Podman under systemd ---------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def podman_instead_of_docker() -> Iterator[None]:
    """The daemon of modern_host.py's installation stopped and its Docker pilots removed (they
    would burn the guest's CPU); afterwards Podman's socket and its folder given back to root as
    ./install --uninstall does, and the Docker configuration back, installed again by ./install."""
    with open(CONFIG, encoding="utf-8") as handle:
        configured = handle.read()
    systemctl("stop", "plancton.service")
    remove_containers(pilot_ids(running_only=False, spares=True), DOCKER_SOCKET)
    run("podman", "import", "--quiet", BUSYBOX_TAR, "busybox:latest")
    try:
        yield
    finally:
        systemctl("stop", "plancton.service")
        if os.path.exists(PODMAN_SOCKET):
            remove_containers(pilot_ids(running_only=False, engine=PODMAN_SOCKET, spares=True), PODMAN_SOCKET)
        run("podman", "rmi", "--force", "busybox:latest", check=False)
        if os.path.exists(PODMAN_DROPIN):
            os.remove(PODMAN_DROPIN)
            os.rmdir(os.path.dirname(PODMAN_DROPIN))
            systemctl("daemon-reload")
            systemctl("restart", "podman.socket")
            os.chown(os.path.dirname(PODMAN_SOCKET), 0, 0)
        with open(CONFIG, "w", encoding="utf-8") as handle:
            handle.write(configured)
        back = install()
        assert back.returncode == 0, back.stdout + back.stderr


def test_install_with_the_podman_engine_switches_the_daemon_to_podman() -> None:
    with open(CONFIG, "w", encoding="utf-8") as handle:
        handle.write(PODMAN_CONFIG)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    done = install("--engine", "podman")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "giving the group plancton the Podman socket and its folder" in done.stdout, done.stdout
    assert "starting plancton.service" in done.stdout, done.stdout
    # the unit waits for Podman's socket and names no docker group, which a Podman host lacks
    with open(UNIT_FILE, encoding="utf-8") as handle:
        unit = handle.read()
    assert "SupplementaryGroups=docker" not in unit and "After=podman.socket" in unit, unit
    assert os.stat(PODMAN_SOCKET).st_gid == grp.getgrnam("plancton").gr_gid
    assert pwd.getpwuid(os.stat(f"/proc/{main_pid()}").st_uid).pw_name == "plancton"
    said = wait_until(
        lambda: [line for line in journal(f"--since={since}").splitlines() if "Podman Engine" in line],
        60,
        "the daemon's start on Podman in the journal",
    )
    assert "cgroup v2, systemd driver" in said[0] and f"pilots go under cgroup {SLICE}" in said[0], said[0]


def test_podman_pilots_live_under_the_slice_with_the_configured_limits() -> None:
    pilots = running_pilots(180, PODMAN_SOCKET)
    # systemd gave the slice cpu.idle 1 (install's slice unit) once Podman asked for it
    assert read(f"{SLICE_FOLDER}/cpu.idle") == "1"
    for pilot in pilots:
        folder = process_cgroup(pilot, PODMAN_SOCKET)
        assert folder.startswith(f"{SLICE_FOLDER}/libpod-{pilot}.scope"), folder
        check_limits(folder, SLICE_FOLDER)
    wait_until(lambda: status_pilots() == short_ids(pilots), 30, "the pilots in planctonctl status")
    wanted = {"parent": SLICE, "cpu": "cpu.idle 1"}
    wait_until(lambda: status().get("cgroup") == wanted, 30, f"planctonctl status showing the cgroup {wanted}")


def test_systemctl_restart_adopts_the_podman_pilots() -> None:
    before = running_pilots(60, PODMAN_SOCKET)
    pid = main_pid()
    systemctl("restart", "plancton.service")
    assert main_pid() != pid
    wait_until(lambda: status_pilots() == short_ids(before), 60, "the adopted pilots in planctonctl status")
    time.sleep(2)  # one more loop, in which no pilot may be started
    assert pilot_ids(running_only=False, engine=PODMAN_SOCKET) == before


def test_podman_pilots_are_paused_resumed_and_stopped_as_the_owner_needs_the_cpu(owner_load: OwnerLoad) -> None:
    pilots = {pilot: process_cgroup(pilot, PODMAN_SOCKET) for pilot in running_pilots(60, PODMAN_SOCKET)}
    owner_load.start(cores=2)
    wait_until(lambda: paused(pilots, PODMAN_SOCKET), PAUSE_DELAY + 60, "the pilots paused (frozen, State.Paused)")
    owner_load.stop()
    wait_until(lambda: running_thawed(pilots, PODMAN_SOCKET), 60, "the pilots resumed (before grace_kill)")
    assert pilot_ids(running_only=False, engine=PODMAN_SOCKET) == set(pilots)
    # busy again past grace_kill: stopped; removed once the owner is idle (grace_spawn holds
    # new ones back)
    owner_load.start(cores=2)
    each_paused(pilots, PODMAN_SOCKET, PAUSE_DELAY + GRACE_KILL + 60)
    wait_until(lambda: stopped(pilots, PODMAN_SOCKET), GRACE_KILL + 60, "the pilots stopped")
    owner_load.stop()
    wait_until(
        lambda: not set(pilots) & pilot_ids(running_only=False, engine=PODMAN_SOCKET), 60, "the stopped pilots removed"
    )
    assert systemctl("is-active", "plancton.service", check=False) == "active"


# -- rootless Podman, user mode -----------------------------------------------------------------


class User:
    """An ordinary user of the guest with a lingering service manager."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.uid = pwd.getpwnam(name).pw_uid
        self.home = pwd.getpwnam(name).pw_dir
        self.runtime = f"/run/user/{self.uid}"
        self.socket = f"{self.runtime}/podman/podman.sock"
        self.manager = f"{CGROUP_ROOT}/user.slice/user-{self.uid}.slice/user@{self.uid}.service"
        self.dropin = f"/run/systemd/system/user@{self.uid}.service.d/without-cpu.conf"

    def run(self, *command: str, check: bool = True) -> Any:
        """Run a command as the user, in a login's environment with the user's bus."""
        environment = [
            f"HOME={self.home}",
            f"USER={self.name}",
            f"XDG_RUNTIME_DIR={self.runtime}",
            f"DBUS_SESSION_BUS_ADDRESS=unix:path={self.runtime}/bus",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LANG=C.UTF-8",
        ]
        return run("runuser", "-u", self.name, "--", "env", "-i", *environment, *command, check=check)

    def start_manager(self, action: str = "start") -> None:
        """Start (or restart) the user's service manager, then the user's Podman socket."""
        systemctl(action, f"user@{self.uid}.service")
        wait_until(lambda: os.path.exists(f"{self.runtime}/bus"), 60, "the user's bus")
        self.run("systemctl", "--user", "start", "podman.socket")

    def write_config(self, text: str) -> None:
        folder = os.path.join(self.home, ".plancton", "conf")
        self.run("mkdir", "-p", "-m", "0700", folder)
        with open(os.path.join(folder, "config.yaml"), "w", encoding="utf-8") as handle:
            handle.write(text.format(socket=self.socket))
        os.chown(os.path.join(folder, "config.yaml"), self.uid, self.uid)

    def log(self) -> str:
        path = os.path.join(self.home, ".plancton", "log", "plancton.log")
        return read(path) if os.path.exists(path) else ""

    def status(self) -> Any:
        done = self.run("planctonctl", "status", "--json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def daemon_pid(self) -> int | None:
        path = os.path.join(self.home, ".plancton", "run", "plancton.pid")
        return int(read(path)) if os.path.exists(path) else None


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    """An ordinary user with subordinate ids (useradd gives them) and linger; removed afterwards
    with everything it ran and stored."""
    run("useradd", "--create-home", "--user-group", USER)
    person = User(USER)
    try:
        yield person
    finally:
        if person.daemon_pid() is not None:
            person.run("planctonctl", "stop", check=False)
        if os.path.exists(person.socket):
            remove_containers(pilot_ids(running_only=False, engine=person.socket, spares=True), person.socket)
        run("loginctl", "disable-linger", USER, check=False)
        run("systemctl", "stop", f"user@{person.uid}.service", check=False)
        if os.path.exists(person.dropin):
            os.remove(person.dropin)
            systemctl("daemon-reload")
        for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
            try:
                if os.stat(f"/proc/{pid}").st_uid == person.uid:
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        wait_until(
            lambda: run("userdel", "--remove", USER, check=False).returncode in (0, 6),
            60,
            f"userdel {USER} (its processes gone)",
            interval=1.0,
        )


def test_a_user_without_the_cpu_controller_is_told_how_to_delegate_it(user: User) -> None:
    """Bad input on this platform: an administrator's drop-in delegates only pids and memory to
    the user's service manager. The daemon says so in one line naming the fix and runs on."""
    os.makedirs(os.path.dirname(user.dropin), exist_ok=True)
    with open(user.dropin, "w", encoding="ascii") as handle:
        handle.write("[Service]\nDelegate=\nDelegate=pids memory\n")
    systemctl("daemon-reload")
    run("loginctl", "enable-linger", USER)
    user.start_manager()
    assert "cpu" not in read(f"{user.manager}/cgroup.controllers").split()
    user.write_config(USER_CONFIG.replace(f"max_docks: {PILOTS}", "max_docks: 0"))
    try:
        started = user.run("planctonctl", "start", check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        wanted = {"parent": SLICE, "cpu": "default weight"}
        wait_until(lambda: (user.status() or {}).get("cgroup") == wanted, 60, f"the user's status showing {wanted}")
        said = [line for line in user.log().splitlines() if NOT_DELEGATED in line]
        assert len(said) == 1, said
        assert f"user {user.uid}'s service manager" in said[0] and "Delegate=cpu" in said[0], said[0]
        assert "user@.service" in said[0], said[0]
    finally:
        user.run("planctonctl", "stop", check=False)
        os.remove(user.dropin)
        systemctl("daemon-reload")


def test_rootless_pilots_run_under_the_users_slice_and_give_way_to_the_owner(user: User, owner_load: OwnerLoad) -> None:
    user.start_manager("restart")  # now with the CPU controller
    # systemd 257 delegates cpu to user@.service by default
    assert "cpu" in read(f"{user.manager}/cgroup.controllers").split()
    user.run("podman", "import", "--quiet", BUSYBOX_TAR, "busybox:latest")
    user.write_config(USER_CONFIG)
    logged = len(user.log())
    started = user.run("planctonctl", "start", check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    slice_folder = f"{user.manager}/{SLICE}"
    pilots = {pilot: process_cgroup(pilot, user.socket) for pilot in running_pilots(180, user.socket)}
    for pilot, folder in pilots.items():
        assert folder.startswith(f"{slice_folder}/libpod-{pilot}.scope"), folder
        check_limits(folder, slice_folder)
    wanted = {"parent": SLICE, "cpu": "cpu.idle 1"}
    wait_until(lambda: (user.status() or {}).get("cgroup") == wanted, 60, f"the user's status showing {wanted}")
    assert read(f"{slice_folder}/cpu.idle") == "1"
    assert NOT_DELEGATED not in user.log()[logged:]

    # the owner loads the CPU: paused after pause_delay, stopped after grace_kill, removed once
    # the owner is idle again
    owner_load.start(cores=2)
    each_paused(pilots, user.socket, PAUSE_DELAY + USER_GRACE_KILL + 60)
    wait_until(lambda: stopped(pilots, user.socket), USER_GRACE_KILL + 60, "the pilots stopped")
    owner_load.stop()
    wait_until(
        lambda: not set(pilots) & pilot_ids(running_only=False, engine=user.socket), 60, "the stopped pilots removed"
    )
    pid = user.daemon_pid()
    stopped_daemon = user.run("planctonctl", "stop", check=False)
    assert stopped_daemon.returncode == 0, stopped_daemon.stdout + stopped_daemon.stderr
    # nothing left behind: no daemon, no container, no pilot's cgroup
    assert pid is not None
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30, f"the daemon (pid {pid}) gone")
    assert user.run("planctonctl", "status", check=False).returncode == 3
    assert not pilot_ids(running_only=False, engine=user.socket, spares=True)
    left = [entry.name for entry in os.scandir(slice_folder) if entry.is_dir()] if os.path.isdir(slice_folder) else []
    assert not left, left
