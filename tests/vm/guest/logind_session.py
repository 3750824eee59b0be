"""A graphical login session of the guest's real systemd-logind, held open for a test.

The guest has no display manager and no pam_systemd, so nothing else opens a session there.
This asks logind itself, as pam_systemd would, over the system D-Bus: ``CreateSession`` for
a user, of type x11 (only graphical sessions take an idle hint from their client), with this
process as the session's leader. It prints one JSON line (``id``, ``path``) once logind has
started the session, then holds the session's FIFO until its standard input closes; logind
ends the session when the FIFO closes, that is when this process exits.

Run as root with an interpreter that has jeepney (the one ./install made in the guest):

    /opt/plancton/venv/bin/python logind_session.py UID
"""

import json
import sys

from jeepney import DBusAddress, new_method_call  # type: ignore[import-untyped]
from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]
from jeepney.wrappers import unwrap_msg  # type: ignore[import-untyped]

MANAGER = DBusAddress(
    "/org/freedesktop/login1", bus_name="org.freedesktop.login1", interface="org.freedesktop.login1.Manager"
)
#: logind answers once the session's scope and the user's service manager have started.
CREATE_TIMEOUT_SECONDS = 120.0


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
