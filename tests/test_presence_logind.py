"""Following logind's idle hint on a real D-Bus: a private dbus-daemon configured like a
system bus, with python-dbusmock's logind template as org.freedesktop.login1.

dbusmock needs dbus-python and PyGObject, which build only against C libraries, so it runs
under the Debian interpreter that has them (packages dbus-daemon and python3-dbusmock);
Plancton's side speaks to it through jeepney, as in production.
"""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from jeepney import DBusAddress, new_method_call  # type: ignore[import-untyped]
from jeepney.bus_messages import message_bus  # type: ignore[import-untyped]
from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]
from jeepney.wrappers import unwrap_msg  # type: ignore[import-untyped]

from plancton.platform import logind
from plancton.platform.presence import PresenceSensor
from tests import services
from tests.conftest import Installation, wait_until


def dbusmock_python() -> str | None:
    """Return an interpreter that can run dbusmock's logind template, or None."""
    for python in (sys.executable, "/usr/bin/python3"):
        check = [python, "-c", "import dbusmock, gi"]
        if shutil.which(python) and subprocess.run(check, capture_output=True, check=False).returncode == 0:
            return python
    return None


DBUSMOCK_PYTHON = dbusmock_python()
pytestmark = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None or DBUSMOCK_PYTHON is None,
    reason="needs dbus-daemon and dbusmock (Debian: dbus-daemon python3-dbusmock)",
)

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""
#: Generous bounds on waits, so that a broken test fails instead of hanging.
WAIT_SECONDS = 10.0


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process this test started, by its pid."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture
def system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private system-like bus; DBUS_SYSTEM_BUS_ADDRESS points at it."""
    config = tmp_path / "system.conf"
    path = tmp_path / "system_bus_socket"
    config.write_text(BUS_CONFIG.format(socket=path))
    process = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address"],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().decode().strip()
        assert address.startswith("unix:"), address
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address
    finally:
        stop(process)


@contextlib.contextmanager
def running_logind(bus: str, log_file: Path) -> Iterator[Callable[[bool, float], None]]:
    """Run dbusmock's logind on the bus; yield set_idle(idle, since_wall), which changes its
    manager's idle hint and emits PropertiesChanged, as logind does."""
    process = subprocess.Popen(
        [str(DBUSMOCK_PYTHON), "-m", "dbusmock", "--template", "logind"],
        env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus},
        stdout=subprocess.DEVNULL,
        stderr=log_file.open("ab"),
    )
    connection = open_dbus_connection(bus=bus)
    try:

        def owned() -> bool:
            reply = connection.send_and_get_reply(message_bus.NameHasOwner(logind.BUS_NAME), timeout=1)
            return bool(reply.body[0])

        assert wait_for(owned), log_file.read_text()
        mock = DBusAddress(logind.MANAGER_PATH, bus_name=logind.BUS_NAME, interface="org.freedesktop.DBus.Mock")

        def set_idle(idle: bool, since_wall: float) -> None:
            values = {"IdleHint": ("b", idle), "IdleSinceHint": ("t", int(since_wall * 1e6))}
            call = new_method_call(mock, "UpdateProperties", "sa{sv}", (logind.MANAGER_INTERFACE, values))
            unwrap_msg(connection.send_and_get_reply(call, timeout=WAIT_SECONDS))

        yield set_idle
    finally:
        connection.close()
        stop(process)


@pytest.fixture
def mock_logind(system_bus: str, tmp_path: Path) -> Iterator[Callable[[bool, float], None]]:
    """dbusmock's logind on the private bus (see :func:`running_logind`)."""
    with running_logind(system_bus, tmp_path / "dbusmock.log") as set_idle:
        yield set_idle


def sensor_for(tmp_path: Path, wake: Callable[[], None] | None = None) -> PresenceSensor:
    """A sensor whose only input source is logind: no terminal or input device under its /dev."""
    return PresenceSensor(
        input_idle=60, run_on_battery=True, wake=wake, device_root=str(tmp_path / "dev"), bus="SYSTEM"
    )


def test_logind_idle_hint_is_read_and_its_signal_wakes_the_loop(
    mock_logind: Callable[[bool, float], None], tmp_path: Path
) -> None:
    now = time.time()
    mock_logind(True, now - 300)
    woken = threading.Event()
    sensor = sensor_for(tmp_path, woken.set)
    try:
        presence = sensor.sample(now)
        assert presence.input_source == "logind"
        assert presence.input_idle_seconds == pytest.approx(300, abs=1)

        # a person comes back: logind announces it, the loop is woken and sees it
        mock_logind(False, time.time())
        assert woken.wait(WAIT_SECONDS)
        assert sensor.sample(time.time()).input_idle_seconds == 0.0

        # and leaves again
        woken.clear()
        left = time.time()
        mock_logind(True, left)
        assert woken.wait(WAIT_SECONDS)
        presence = sensor.sample(left + 20)
        assert presence.input_idle_seconds == pytest.approx(20, abs=1)
    finally:
        sensor.close()
    assert not any(thread.name == "plancton-logind" for thread in threading.enumerate())


def test_logind_without_any_session_cannot_tell(mock_logind: Callable[[bool, float], None], tmp_path: Path) -> None:
    """logind with no session says "idle since 0": that is no answer, and the owner counts as present."""
    mock_logind(True, 0)
    sensor = sensor_for(tmp_path)
    try:
        assert sensor.sample(time.time()).input_idle_seconds is None
    finally:
        sensor.close()


def test_logind_going_away_and_coming_back(
    system_bus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """logind restarting: meanwhile it cannot tell (warned once), then it is followed again."""
    monkeypatch.setattr(logind, "RETRY_SECONDS", 0.2)
    log_file = tmp_path / "dbusmock.log"
    with running_logind(system_bus, log_file) as set_idle:
        set_idle(True, time.time() - 100)
        sensor = sensor_for(tmp_path)
    try:
        with caplog.at_level(logging.INFO):
            assert wait_for(lambda: sensor.sample(time.time()).input_idle_seconds is None)
            with running_logind(system_bus, log_file) as set_idle:
                set_idle(True, time.time() - 100)
                assert wait_for(lambda: sensor.sample(time.time()).input_idle_seconds is not None)
                assert sensor.sample(time.time()).input_source == "logind"
    finally:
        sensor.close()
    messages = [record.getMessage() for record in caplog.records]
    back = [index for index, message in enumerate(messages) if "logind answers on the system D-Bus again" in message]
    assert back, messages
    # one warning for the whole time it was away, however many attempts failed
    assert sum("cannot follow logind" in message for message in messages[: back[0]]) == 1


def test_a_bus_that_never_answers_does_not_hold_up_sampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket that accepts connections and says nothing: the sensor warns once and answers
    from its other sources; its thread stops when closed."""
    path = tmp_path / "silent_bus"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
    monkeypatch.setattr(logind, "RETRY_SECONDS", 0.1)
    (tmp_path / "dev" / "input").mkdir(parents=True)
    (tmp_path / "dev" / "input" / "event3").write_text("")
    os.utime(tmp_path / "dev" / "input" / "event3", (1000.0, 1000.0))
    try:
        with caplog.at_level(logging.WARNING):
            sensor = PresenceSensor(input_idle=60, run_on_battery=True, device_root=str(tmp_path / "dev"))
            try:
                presence = sensor.sample(1090.0)
                assert wait_for(lambda: any("cannot follow logind" in r.getMessage() for r in caplog.records))
            finally:
                sensor.close()
    finally:
        listener.close()
    assert presence.input_idle_seconds == 90.0 and presence.input_source == "input devices"
    assert sum("cannot follow logind" in record.getMessage() for record in caplog.records) == 1
    assert not any(thread.name == "plancton-logind" for thread in threading.enumerate())


def test_a_daemon_pauses_its_pilots_while_someone_is_at_the_keyboard(
    mock_logind: Callable[[bool, float], None], installation: Installation, docker_api: docker.APIClient
) -> None:
    """The whole path on real parts: logind's idle hint turns false, its signal wakes a daemon
    that would otherwise sleep 30 s, and the engine pauses the pilot; status --why says why.
    When the person has been away for input_idle, the pilot runs again."""
    mock_logind(True, time.time() - 600)
    installation.write_config(
        "owner_busy_percent: 100\nowner_idle_percent: 99\npause_delay: 1h\ngrace_kill: 1h\ngrace_spawn: 1\n"
        "main_sleep: 30\nmax_docks: 1\ndocker_cmd: sleep 300\ninput_idle: 60\nrun_on_battery: true\n"
    )
    assert installation.ctl("start").returncode == 0

    def pilot_states() -> list[str]:
        return [entry["State"] for entry in services.instance_containers(docker_api, installation.instance)]

    wait_until(lambda: pilot_states() == ["running"], what="a running pilot")
    mock_logind(False, time.time())
    # well before the loop's next 30 s turn: the signal woke it
    wait_until(lambda: pilot_states() == ["paused"], timeout=15, what="the pilot paused")
    why = installation.ctl("status", "--why").stdout
    assert "keyboard used 0 s ago (logind): pausing 1 youngest pilots" in why
    mock_logind(True, time.time() - 120)
    wait_until(lambda: pilot_states() == ["running"], timeout=15, what="the pilot running again")
    assert "keyboard used" not in installation.ctl("status", "--why").stdout
