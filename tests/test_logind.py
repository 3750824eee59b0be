"""Following logind's idle hint on a real D-Bus: a private dbus-daemon configured like a
system bus, with python-dbusmock's logind template as org.freedesktop.login1
(:mod:`tests.support.logind_mock`)."""

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from plancton.platform import logind
from plancton.platform.presence import PresenceSensor
from tests.conftest import Installation, wait_until
from tests.support import logind_mock, services
from tests.support.logind_mock import MISSING, WAIT_SECONDS, running_logind, wait_for

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture
def system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private system-like bus; DBUS_SYSTEM_BUS_ADDRESS points at it."""
    with logind_mock.system_bus(tmp_path) as address:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        yield address


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


@pytest.mark.parametrize("since", [0.0, 1000.0], ids=["since 0", "since its start"])
def test_logind_without_any_session_cannot_tell(system_bus: str, tmp_path: Path, since: float) -> None:
    """logind with no session says "idle" (since 0 up to systemd 256, since its own start from
    257 on): that is no answer, and the owner counts as present."""
    with running_logind(system_bus, tmp_path / "dbusmock.log", session=False) as set_idle:
        set_idle(True, since)
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
    # the loop that paused the pilot may already be followed by one with nothing left to do,
    # which status shows: the log says what was done, status --why why the pilot is held
    assert "paused pilot" in installation.log()
    why = installation.ctl("status", "--why").stdout
    assert "keyboard used 0 s ago (logind)" in why and "held: input" in why
    assert installation.status()["holds"] == ["input"]
    mock_logind(True, time.time() - 120)
    wait_until(lambda: pilot_states() == ["running"], timeout=15, what="the pilot running again")
    assert "keyboard used" not in installation.ctl("status", "--why").stdout
