"""Plancton on a modern host, as its administrator would see it: systemd as PID 1, the
unified cgroup v2 hierarchy and Docker's systemd cgroup driver. Runs inside the VM tier's
guest (tests/vm/run) as root, against the user-visible interfaces only: ./install,
systemctl, journalctl, planctonctl, the cgroup file system and the Docker API.

The tests run in the order written and share one installation. Those marked after_reboot
run in a second pytest session, after the guest has rebooted.
"""

import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.owner_load import OwnerLoad
from tests.vm.guest.logind_session import LoginSession

CHECKOUT = os.environ.get("PLANCTON_CHECKOUT", "/root/plancton")
CONFIG = "/etc/plancton/config.yaml"
INSTANCE = "plancton"  # the default configuration's
SLICE = f"{INSTANCE}.slice"
SLICE_FOLDER = f"/sys/fs/cgroup/{SLICE}"
UNIT_FILE = "/etc/systemd/system/plancton.service"
SLICE_FILE = f"/etc/systemd/system/{SLICE}"
STATE_FILE = "/run/plancton/state.json"
LABEL = "org.plancton.instance"
SPARE_LABEL = "org.plancton.spare"
PILOTS = 2
PAUSE_DELAY = 3
GRACE_KILL = 10
# Pilots that burn CPU, so that their CPU use can be seen to fall when the owner needs it.
TEST_CONFIG = f"""\
main_sleep: 2s
max_docks: {PILOTS}
docks_per_loop: {PILOTS}
docker_image: busybox:latest
pull_policy: never
docker_cmd: ["sh", "-c", "while :; do :; done"]
cpus_per_dock: 0.5
max_dock_mem: 128M
max_dock_swap: 64M
pids_limit: 64
vacate_time: 2s
mem_floor: 64M
owner_busy_percent: 70
owner_idle_percent: 50
pause_delay: {PAUSE_DELAY}s
grace_kill: {GRACE_KILL}s
grace_spawn: 10m
"""
DAEMON_CPU_WEIGHT_WARNING = "cannot give the pilots the lowest CPU weight"
# A person at the keyboard, as the guest's systemd-logind tells it: short timers, and pilots
# paused (not stopped) while the person is there.
INPUT_IDLE = 4
PRESENCE_CONFIG = (
    TEST_CONFIG.replace(f"grace_kill: {GRACE_KILL}s", "grace_kill: 10m").replace("grace_spawn: 10m", "grace_spawn: 2s")
    + f"input_idle: {INPUT_IDLE}s\n"
)
PERSON = "vmtest-person"
#: the interpreter ./install made, which runs the session helper (with jeepney)
INSTALLED_PYTHON = "/opt/plancton/venv/bin/python"
NO_INPUT_SOURCE_WARNING = "nothing tells when a keyboard or mouse was last used"
NO_INPUT_SOURCE_WHY = "no source tells when a keyboard was last used"

after_reboot = pytest.mark.after_reboot


# -- helpers ------------------------------------------------------------------------------------


def run(*command: str, check: bool = True, timeout: float = 600, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; fail the test with its output when check is set."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **options)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll condition until it returns something true; return it, or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


DOCKER_SOCKET = "/var/run/docker.sock"


class EngineSocket(http.client.HTTPConnection):
    """An HTTP connection to an engine's Docker API socket (cheaper than a CLI under emulation)."""

    def __init__(self, path: str) -> None:
        super().__init__("docker", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def docker_get(path: str, engine: str = DOCKER_SOCKET, method: str = "GET") -> Any:
    """Send a request to an engine's Docker API (the Docker Engine's by default); return the
    decoded JSON (None for 404 or an empty answer)."""
    connection = EngineSocket(engine)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status == 404:
        return None
    assert response.status in (200, 204), f"{method} {path} on {engine}: {response.status} {body!r}"
    return json.loads(body) if body else None


def pilot_ids(running_only: bool = True, engine: str = DOCKER_SOCKET, spares: bool = False) -> set[str]:
    """Return the ids of the default instance's pilot containers (on the Docker Engine by
    default); the spare that waits (created ahead of need, see ``spare_pilot``) is no pilot of
    the pool and counts only with ``spares``."""
    filters = urllib.parse.quote(json.dumps({"label": [f"{LABEL}={INSTANCE}"]}))
    containers = docker_get(f"/containers/json?all={0 if running_only else 1}&filters={filters}", engine)
    return {container["Id"] for container in containers if spares or not waiting_spare(container)}


def waiting_spare(container: dict[str, Any]) -> bool:
    """Return whether a container of the engine's listing is a spare that has not started."""
    return (container.get("Labels") or {}).get(SPARE_LABEL) == "true" and container["State"] == "created"


def running_pilots(timeout: float, engine: str = DOCKER_SOCKET) -> set[str]:
    """Wait until the default instance's ``PILOTS`` pilots run on ``engine`` (a busy guest may
    still be starting one, or hold one paused a moment) and return their ids."""
    found: set[str] = wait_until(
        lambda: len(ids := pilot_ids(engine=engine)) == PILOTS and ids, timeout, f"{PILOTS} running pilots on {engine}"
    )
    return found


def short_ids(containers: set[str]) -> set[str]:
    """The 12-character ids planctonctl status shows."""
    return {container[:12] for container in containers}


def status_pilots() -> set[str]:
    """The ids of the pilots planctonctl status --json lists, but for the spare that waits."""
    return {pilot["id"] for pilot in status()["pilots"] if pilot["state"] != "spare"}


def inspect(container: str) -> Any:
    return docker_get(f"/containers/{container}/json")


def read(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read().strip()


def scope_of(container: str) -> str:
    """Return the cgroup folder of a container's main process, from /proc/PID/cgroup."""
    pid = inspect(container)["State"]["Pid"]
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        hierarchy, _, path = line.split(":", 2)
        if hierarchy == "0":
            return "/sys/fs/cgroup" + path
    pytest.fail(f"no cgroup v2 entry in /proc/{pid}/cgroup")


def slice_usage_seconds() -> float:
    for line in read(f"{SLICE_FOLDER}/cpu.stat").splitlines():
        name, value = line.split()
        if name == "usage_usec":
            return int(value) / 1e6
    pytest.fail(f"no usage_usec in {SLICE_FOLDER}/cpu.stat")


def slice_cores(window: float) -> float:
    """Return the pilots' CPU use over the next window seconds, in cores."""
    before, started = slice_usage_seconds(), time.monotonic()
    time.sleep(window)
    return (slice_usage_seconds() - before) / (time.monotonic() - started)


def systemctl(*args: str, check: bool = True) -> str:
    return run("systemctl", *args, check=check).stdout.strip()


def main_pid() -> int:
    return int(systemctl("show", "--property=MainPID", "--value", "plancton.service"))


def journal(*extra: str) -> str:
    return run("journalctl", "--no-pager", "--output=cat", "--unit=plancton.service", *extra).stdout


def status() -> Any:
    done = run("planctonctl", "status", "--json", check=False)
    assert done.returncode == 0, f"planctonctl status exited with {done.returncode}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def install(*options: str) -> subprocess.CompletedProcess[str]:
    """Run ./install from the writable copy of the checkout, as root in a login's environment."""
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
    environment |= {name: value for name, value in os.environ.items() if name.startswith("PIP_")}
    return run(os.path.join(CHECKOUT, "install"), *options, check=False, env=environment, cwd=CHECKOUT)


def why() -> str:
    """What planctonctl status --why says of the daemon's last loop."""
    return run("planctonctl", "status", "--why").stdout


def logind_manager_hint() -> tuple[bool, int]:
    """The guest logind's manager IdleHint and IdleSinceHint (microseconds of wall-clock time)."""
    values = []
    for name in ("IdleHint", "IdleSinceHint"):
        command = ("busctl", "get-property", "org.freedesktop.login1", "/org/freedesktop/login1")
        values.append(run(*command, "org.freedesktop.login1.Manager", name).stdout.split()[1])
    return values[0] == "true", int(values[1])


def login_sessions() -> str:
    """The guest's logind sessions, one a line (empty: none)."""
    return run("loginctl", "list-sessions", "--no-legend").stdout.strip()


def logind_says() -> str:
    """The guest logind's manager idle hint and sessions, for failure messages."""
    idle, since = logind_manager_hint()
    return f"IdleHint {idle}, IdleSinceHint {since}, sessions: {login_sessions() or 'none'}"


def wait_for_why(text: str, timeout: float) -> str:
    """Wait until planctonctl status --why mentions text; return what it said, or fail with
    what it and logind said last."""
    deadline = time.monotonic() + timeout
    while True:
        said = why()
        if text in said:
            return said
        if time.monotonic() > deadline:
            pytest.fail(f"--why did not mention {text!r} within {timeout:.0f} s: {said!r}; logind: {logind_says()}")
        time.sleep(0.5)


def paused(pilot: str) -> bool:
    """Whether a pilot is frozen (cgroup.freeze 1) and the engine says it is paused."""
    return read(f"{SLICE_FOLDER}/docker-{pilot}.scope/cgroup.freeze") == "1" and inspect(pilot)["State"]["Paused"]


def running_unpaused(pilot: str) -> bool:
    """Whether a pilot runs and is not frozen."""
    state = inspect(pilot)["State"]
    thawed = read(f"{SLICE_FOLDER}/docker-{pilot}.scope/cgroup.freeze") == "0"
    return state["Running"] and not state["Paused"] and thawed


@pytest.fixture
def person() -> Iterator[int]:
    """A user of the guest (its uid), removed afterwards with its logind sessions."""
    run("useradd", "--create-home", "--user-group", PERSON)
    try:
        yield pwd.getpwnam(PERSON).pw_uid
    finally:
        run("loginctl", "terminate-user", PERSON, check=False)
        wait_until(
            lambda: run("userdel", "--remove", PERSON, check=False).returncode in (0, 6),
            60,
            f"userdel {PERSON} (its processes gone)",
            interval=1.0,
        )


# -- before the reboot -------------------------------------------------------------------------


def test_install_takes_the_systemd_branch() -> None:
    assert os.path.isdir("/run/systemd/system") and not os.path.exists(UNIT_FILE)
    os.makedirs(os.path.dirname(CONFIG), exist_ok=True)
    with open(CONFIG, "w", encoding="utf-8") as handle:
        handle.write(TEST_CONFIG)

    done = install()
    daemon_output = run("journalctl", "--no-pager", "--output=cat", "--lines=2", "_SYSTEMD_UNIT=plancton.service")
    daemon_said = " | ".join(daemon_output.stdout.splitlines())
    assert done.returncode == 0, f"the daemon's journal ends: {daemon_said}\n{done.stdout}{done.stderr}"
    assert f"installing the systemd unit {UNIT_FILE}" in done.stdout, done.stdout
    assert f"installing {SLICE_FILE}" in done.stdout, done.stdout
    assert "configuration: keeping /etc/plancton/config.yaml" in done.stdout

    # Type=notify: "systemctl start" returned only once the daemon said it was ready
    assert systemctl("is-enabled", "plancton.service") == "enabled"
    assert systemctl("is-active", "plancton.service", check=False) == "active"
    assert pwd.getpwuid(os.stat(f"/proc/{main_pid()}").st_uid).pw_name == "plancton"
    assert status()["pid"] == main_pid()
    wait_until(lambda: "Docker Engine" in journal(), 60, "the daemon's start in the journal")
    assert "cgroup v2, systemd driver" in journal(), journal()


def test_pilots_live_under_the_slice_with_the_configured_limits() -> None:
    pilots = running_pilots(180)
    assert read(f"{SLICE_FOLDER}/cpu.idle") == "1"
    for pilot in pilots:
        scope = scope_of(pilot)
        assert scope == f"{SLICE_FOLDER}/docker-{pilot}.scope"
        assert read(f"{scope}/memory.max") == str(128 * 2**20)
        assert read(f"{scope}/memory.swap.max") == str(64 * 2**20)
        assert read(f"{scope}/pids.max") == "64"
        assert read(f"{scope}/cpu.max") == "50000 100000"
    wait_until(lambda: status_pilots() == short_ids(pilots), 30, "the pilots in planctonctl status")
    wanted = {"parent": SLICE, "cpu": "cpu.idle 1"}
    wait_until(lambda: status().get("cgroup") == wanted, 30, f"planctonctl status showing the cgroup {wanted}")
    with open(STATE_FILE, encoding="utf-8") as handle:
        assert json.load(handle)


def test_the_daemon_does_not_warn_about_a_cpu_weight_the_slice_already_has() -> None:
    """systemd gave the slice cpu.idle 1 (the slice unit install wrote); the daemon, which
    cannot write to the cgroup file system under its unit's hardening, should see that the
    pilots already have the lowest priority rather than tell the administrator to run it as root.
    """
    assert read(f"{SLICE_FOLDER}/cpu.idle") == "1"
    warnings = [line for line in journal().splitlines() if DAEMON_CPU_WEIGHT_WARNING in line]
    assert not warnings, "\n".join(warnings)


def test_systemctl_reload_applies_a_changed_configuration() -> None:
    with open(CONFIG, "a", encoding="utf-8") as handle:
        handle.write("max_ttl: 11h\n")
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    pid = main_pid()
    systemctl("reload", "plancton.service")
    wait_until(lambda: "applied (changed: max_ttl" in journal(f"--since={since}"), 60, "the reload in the journal")
    assert main_pid() == pid


def test_systemctl_restart_adopts_the_running_pilots() -> None:
    before = running_pilots(60)
    pid = main_pid()
    systemctl("restart", "plancton.service")
    assert systemctl("is-active", "plancton.service", check=False) == "active"
    assert main_pid() != pid
    # a few loops later the new daemon lists the same pilots and started none
    wait_until(lambda: status_pilots() == short_ids(before), 60, "the adopted pilots in planctonctl status")
    time.sleep(6)
    assert pilot_ids(running_only=False) == before


def test_a_slice_without_the_idle_weight_is_reported_with_its_fix() -> None:
    """Bad input on this platform: an administrator gave the slice a normal CPU weight. The
    daemon, which cannot write to the cgroup file system (ProtectControlGroups=yes, user
    plancton), says so and how to fix it; the pilots run on. Then the slice is put right.
    """
    pilots = pilot_ids()
    try:
        systemctl("set-property", "--runtime", SLICE, "CPUWeight=100")
        assert read(f"{SLICE_FOLDER}/cpu.idle") == "0"
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        systemctl("restart", "plancton.service")
        warning = wait_until(
            lambda: [line for line in journal(f"--since={since}").splitlines() if DAEMON_CPU_WEIGHT_WARNING in line],
            60,
            "the daemon's warning about the CPU weight",
        )
        assert "CPUWeight=idle" in warning[0], warning[0]
        assert status()["cgroup"]["cpu"] == "default weight"
        assert pilot_ids() == pilots
    finally:
        systemctl("set-property", "--runtime", SLICE, "CPUWeight=idle")
    assert read(f"{SLICE_FOLDER}/cpu.idle") == "1"
    systemctl("restart", "plancton.service")
    wanted = {"parent": SLICE, "cpu": "cpu.idle 1"}
    wait_until(lambda: status().get("cgroup") == wanted, 60, f"planctonctl status showing the cgroup {wanted}")


def test_the_owner_gets_the_cpu_back(owner_load: OwnerLoad) -> None:
    pilots = running_pilots(60)
    before = slice_cores(2.0)
    assert before > 0.3, f"the pilots' busy loops used only {before:.2f} cores before the owner's load"
    owner_load.start(cores=2)
    # at once: cpu.idle leaves the pilots only the CPU time no one else wants
    falls = [slice_cores(1.0) for _ in range(2)]
    assert falls[-1] < 0.1, f"pilots' CPU use in cores, 1-s windows after the owner's load: {falls}"

    # after pause_delay: frozen
    def all_paused() -> bool:
        return all(
            read(f"{SLICE_FOLDER}/docker-{pilot}.scope/cgroup.freeze") == "1" and inspect(pilot)["State"]["Paused"]
            for pilot in pilots
        )

    wait_until(all_paused, PAUSE_DELAY + 30, "the pilots paused (cgroup.freeze 1, State.Paused)")

    # after grace_kill: stopped
    def all_stopped() -> bool:
        return all((details := inspect(pilot)) is None or not details["State"]["Running"] for pilot in pilots)

    wait_until(all_stopped, GRACE_KILL + 60, "the pilots stopped")
    assert not pilot_ids()


def test_the_daemon_outlives_the_reclaim() -> None:
    assert systemctl("is-active", "plancton.service", check=False) == "active"
    assert status()["pid"] == main_pid()


def test_pilots_give_way_to_a_person_at_the_keyboard_as_the_guests_logind_tells(
    person: int, record_property: Callable[[str, object], None]
) -> None:
    """input_idle with the real systemd-logind of the guest, read by the daemon over the
    system D-Bus as the unprivileged plancton user, under its unit's hardening: a session's
    idle hint holds the pilots back, lets them start, pauses them and resumes them.
    """
    with open(CONFIG, encoding="utf-8") as handle:
        configured = handle.read()
    session = LoginSession(person, INSTALLED_PYTHON)
    try:
        with open(CONFIG, "w", encoding="utf-8") as handle:
            handle.write(PRESENCE_CONFIG)
        systemctl("reload", "plancton.service")
        # a new session is in use: a person at the keyboard, and no pilot starts
        assert "keyboard used" in wait_for_why("(logind)", 60)
        assert not pilot_ids()

        # the person leaves: pilots start input_idle and grace_spawn later
        session.set_idle(True)
        left = time.monotonic()
        pilots = running_pilots(120)
        record_property("idle_hint_true_to_pilots_started_seconds", round(time.monotonic() - left, 1))

        # back at the keyboard: logind's signal wakes the daemon, which pauses the pilots
        session.set_idle(False)
        back = time.monotonic()
        wait_until(lambda: all(paused(pilot) for pilot in pilots), 60, "the pilots paused")
        record_property("idle_hint_false_to_pilots_paused_seconds", round(time.monotonic() - back, 1))
        assert "(logind)" in why()

        # gone again: the same pilots resume after input_idle
        session.set_idle(True)
        left = time.monotonic()
        wait_until(lambda: all(running_unpaused(pilot) for pilot in pilots), 60, "the pilots resumed")
        record_property("idle_hint_true_to_pilots_resumed_seconds", round(time.monotonic() - left, 1))
        assert pilot_ids(running_only=False) == pilots

        # logged out: logind forgets the session
        session.close()
        wait_until(lambda: not login_sessions(), 30, "logind without a session")
    finally:
        session.close()
        with open(CONFIG, "w", encoding="utf-8") as handle:
            handle.write(configured)
        systemctl("reload", "plancton.service")


def test_without_a_login_session_the_daemon_cannot_tell_and_holds_the_pilots(
    record_property: Callable[[str, object], None],
) -> None:
    """input_idle on a host where nobody is logged in (the session of the test above is
    gone). logind still says "idle" (since 0 up to systemd 256, since its own start from 257
    on), which is no answer: the daemon says once that nothing tells when a keyboard was last
    used, and pilots do not run."""
    assert not login_sessions()
    idle, since = logind_manager_hint()
    record_property("no_session_logind_idle_hint", f"{idle} since {since}")
    assert idle, logind_says()
    with open(CONFIG, encoding="utf-8") as handle:
        configured = handle.read()
    reloaded = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        with open(CONFIG, "w", encoding="utf-8") as handle:
            handle.write(PRESENCE_CONFIG)
        systemctl("reload", "plancton.service")
        wait_for_why(NO_INPUT_SOURCE_WHY, 60)
        wait_until(lambda: not any(running_unpaused(pilot) for pilot in pilot_ids()), 60, "no pilot running")
        # journald may index the daemon's line a moment after the daemon acted on it
        said = wait_until(
            lambda: [line for line in journal(f"--since={reloaded}").splitlines() if NO_INPUT_SOURCE_WARNING in line],
            30,
            "the daemon's warning in the journal",
        )
        assert len(said) == 1, said
    finally:
        with open(CONFIG, "w", encoding="utf-8") as handle:
            handle.write(configured)
        systemctl("reload", "plancton.service")


# -- after the reboot --------------------------------------------------------------------------


@after_reboot
def test_the_daemon_is_back_after_a_reboot() -> None:
    assert systemctl("is-enabled", "plancton.service") == "enabled"
    wait_until(lambda: systemctl("is-active", "plancton.service", check=False) == "active", 120, "plancton active")
    assert pwd.getpwuid(os.stat(f"/proc/{main_pid()}").st_uid).pw_name == "plancton"
    assert status()["pid"] == main_pid()
    assert "Docker Engine" in journal("--boot=0")


@after_reboot
def test_uninstall_purge_leaves_nothing() -> None:
    uid = pwd.getpwnam("plancton").pw_uid
    done = install("--uninstall", "--purge")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not os.path.exists(UNIT_FILE) and not os.path.exists(SLICE_FILE)
    assert systemctl("show", "--property=LoadState", "--value", "plancton.service") == "not-found"
    # systemd loads any slice by name, file or not: the slice must be stopped and have no file
    assert systemctl("show", "--property=ActiveState", "--value", SLICE) == "inactive"
    assert systemctl("show", "--property=FragmentPath", "--value", SLICE) == ""
    assert not os.path.exists(SLICE_FOLDER)
    assert not pilot_ids(running_only=False, spares=True)
    with pytest.raises(KeyError):
        pwd.getpwnam("plancton")
    left = [
        path
        for path in ("/opt/plancton", "/etc/plancton", "/var/log/plancton", "/run/plancton")
        if os.path.exists(path)
    ]
    assert not left
    assert not shutil.which("planctonctl")
    assert str(uid) not in run("ps", "-eo", "uid=").stdout.split()
