"""A real org.freedesktop.login1 on a private bus, for the presence tests and benchmark: a
dbus-daemon configured like a system bus, with python-dbusmock's logind template on it.

dbusmock needs dbus-python and PyGObject, which build only against C libraries, so it runs
under the Debian interpreter that has them (packages dbus-daemon and python3-dbusmock);
Plancton's side speaks to it through jeepney, as in production.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from jeepney import DBusAddress, new_method_call  # type: ignore[import-untyped]
from jeepney.bus_messages import message_bus  # type: ignore[import-untyped]
from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]
from jeepney.wrappers import unwrap_msg  # type: ignore[import-untyped]

from plancton.platform import logind

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
#: Generous bounds on waits, so that a broken setup fails instead of hanging.
WAIT_SECONDS = 10.0


def dbusmock_python() -> str | None:
    """Return an interpreter that can run dbusmock's logind template, or None."""
    for python in (sys.executable, "/usr/bin/python3"):
        check = [python, "-c", "import dbusmock, gi"]
        if shutil.which(python) and subprocess.run(check, capture_output=True, check=False).returncode == 0:
            return python
    return None


DBUSMOCK_PYTHON = dbusmock_python()
#: Why the presence tests cannot run here, or None when they can.
MISSING = (
    "needs dbus-daemon and dbusmock (Debian: dbus-daemon python3-dbusmock)"
    if shutil.which("dbus-daemon") is None or DBUSMOCK_PYTHON is None
    else None
)


def wait_for(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    """Poll a condition every 20 ms; return whether it held within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def stop(process: "subprocess.Popen[bytes]") -> None:
    """End a process started here, by its pid."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


@contextlib.contextmanager
def system_bus(folder: Path) -> Iterator[str]:
    """Run a private system-like bus with its socket in ``folder``; yield its address."""
    config = folder / "system.conf"
    config.write_text(BUS_CONFIG.format(socket=folder / "system_bus_socket"))
    process = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().decode().strip()
        if not address.startswith("unix:"):
            raise RuntimeError(f"dbus-daemon printed no address ({address!r})")
        yield address
    finally:
        stop(process)


@contextlib.contextmanager
def running_logind(bus: str, log_file: Path, session: bool = True) -> Iterator[Callable[[bool, float], None]]:
    """Run dbusmock's logind on the bus, with one session of a person on seat0 unless
    ``session`` is false; yield set_idle(idle, since_wall), which changes its manager's idle
    hint and emits PropertiesChanged, as logind does."""
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

        if not wait_for(owned):
            raise RuntimeError(f"dbusmock's logind did not come up: {log_file.read_text()}")
        mock = DBusAddress(logind.MANAGER_PATH, bus_name=logind.BUS_NAME, interface="org.freedesktop.DBus.Mock")
        if session:
            add = new_method_call(mock, "AddSession", "ssusb", ("c1", "seat0", 1000, "owner", True))
            unwrap_msg(connection.send_and_get_reply(add, timeout=WAIT_SECONDS))

        def set_idle(idle: bool, since_wall: float) -> None:
            values = {"IdleHint": ("b", idle), "IdleSinceHint": ("t", int(since_wall * 1e6))}
            call = new_method_call(mock, "UpdateProperties", "sa{sv}", (logind.MANAGER_INTERFACE, values))
            unwrap_msg(connection.send_and_get_reply(call, timeout=WAIT_SECONDS))

        yield set_idle
    finally:
        connection.close()
        stop(process)
