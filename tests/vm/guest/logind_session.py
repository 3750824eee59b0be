"""A graphical login session of the host's real systemd-logind, held open for a test or the
soak (tests/soak.py --presence).

The guest has no display manager and no pam_systemd, so nothing else opens a session there.
This asks logind itself, as pam_systemd would, over the system D-Bus: ``CreateSession`` for
a user, of type x11 (only graphical sessions take an idle hint from their client), with this
process as the session's leader. It prints one JSON line (``id``, ``path``) once logind has
started the session, then holds the session's FIFO until its standard input closes; logind
ends the session when the FIFO closes, that is when this process exits.

Run as root with an interpreter that has Plancton's dependencies (jeepney):

    python logind_session.py UID

or use :class:`LoginSession`, which runs it.
"""

import json
import subprocess
import sys

from jeepney import DBusAddress, new_method_call  # type: ignore[import-untyped]
from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]
from jeepney.wrappers import unwrap_msg  # type: ignore[import-untyped]

MANAGER = DBusAddress(
    "/org/freedesktop/login1", bus_name="org.freedesktop.login1", interface="org.freedesktop.login1.Manager"
)
#: logind answers once the session's scope and the user's service manager have started.
CREATE_TIMEOUT_SECONDS = 120.0


class LoginSession:
    """A graphical session of the host's systemd-logind for a user, held open by this script
    (run with ``python``) until :meth:`close`. Raises RuntimeError when logind opens none."""

    def __init__(self, uid: int, python: str = sys.executable) -> None:
        pipe = subprocess.PIPE
        self.helper = subprocess.Popen([python, __file__, str(uid)], stdin=pipe, stdout=pipe, stderr=pipe, text=True)
        assert self.helper.stdout is not None and self.helper.stderr is not None
        line = self.helper.stdout.readline()
        if not line:
            self.helper.wait(30)
            raise RuntimeError(f"no logind session for uid {uid}: {self.helper.stderr.read()}")
        opened = json.loads(line)
        self.id: str = opened["id"]
        self.path: str = opened["path"]

    def set_idle(self, idle: bool) -> None:
        """Set the session's idle hint, as a desktop's idle monitor does."""
        interface = "org.freedesktop.login1.Session"
        command = ["busctl", "call", "org.freedesktop.login1", self.path, interface, "SetIdleHint", "b"]
        subprocess.run([*command, str(idle).lower()], check=True, capture_output=True, timeout=60)

    def close(self) -> None:
        """Log out: the helper closes the session's FIFO and exits."""
        if self.helper.poll() is None:
            assert self.helper.stdin is not None
            self.helper.stdin.close()
            self.helper.wait(30)


def main(argv: list[str]) -> int:
    """Open a session for the user id in argv[1]; hold it until standard input closes."""
    uid = int(argv[1])
    with open_dbus_connection(bus="SYSTEM", enable_fds=True) as connection:
        # uid, leader pid (0: the caller), service, type, class, desktop, seat, vtnr, tty,
        # display, remote, remote user, remote host, properties
        arguments: tuple[object, ...] = (uid, 0, "plancton-vmtest", "x11", "user", "", "", 0, "", "", False, "", "", [])
        call = new_method_call(MANAGER, "CreateSession", "uusssssussbssa(sv)", arguments)
        reply = unwrap_msg(connection.send_and_get_reply(call, timeout=CREATE_TIMEOUT_SECONDS))
        session_id, path, fifo = reply[0], reply[1], reply[3]
        print(json.dumps({"id": session_id, "path": path}), flush=True)
        try:
            sys.stdin.read()
        finally:
            fifo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
