"""The systemd notification protocol (sd_notify): ready, and the watchdog.

A Type=notify unit knows when the
daemon is ready and that its loop is alive (watchdog). Does nothing outside systemd.
"""

import os
import socket


def notify(message: str) -> bool:
    """Send a notification such as "READY=1" or "WATCHDOG=1"; return whether one was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as channel:
            channel.connect(address)
            channel.sendall(message.encode("utf-8"))
    except OSError:
        return False
    return True
