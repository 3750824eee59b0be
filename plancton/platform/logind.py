"""systemd-logind's idle hint, followed over the system D-Bus in a background thread.

logind (``org.freedesktop.login1``) knows whether anybody uses the host's sessions: its
manager's ``IdleHint`` is false while any session is in use, and ``IdleSinceHint`` says
(in microseconds of wall-clock time) since when all have been idle. It announces a change
with a ``PropertiesChanged`` signal, so the thread wakes the daemon's loop as soon as a
person comes back instead of the loop asking over and over. The question is open to any
user: no privilege is needed.

All D-Bus traffic happens in the thread, each call bounded by :data:`CALL_TIMEOUT_SECONDS`;
the loop only reads the last answer, so a bus that is slow or silent never holds it up.
jeepney speaks D-Bus in pure Python, so no C library or GLib main loop is needed.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from jeepney import DBusAddress, MatchRule, Properties, new_method_call  # type: ignore[import-untyped]
from jeepney.bus_messages import message_bus  # type: ignore[import-untyped]
from jeepney.io.blocking import DBusConnection, open_dbus_connection  # type: ignore[import-untyped]
from jeepney.wrappers import DBusErrorResponse, unwrap_msg  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

BUS_NAME = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/login1"
MANAGER_INTERFACE = "org.freedesktop.login1.Manager"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
IDLE_PROPERTIES = frozenset({"IdleHint", "IdleSinceHint"})
#: Longest wait for any one answer of the bus (authentication included).
CALL_TIMEOUT_SECONDS = 0.2
#: How often the thread looks at its stop flag and at pending refresh requests.
TURN_SECONDS = 0.25
#: Wait before connecting again after the bus or logind failed.
RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class IdleHint:
    """logind's answer: whether every session is idle, and since when (wall-clock seconds)."""

    idle: bool
    since: float

    def seconds_idle(self, now_wall: float) -> float:
        """Given the wall-clock time, return the seconds since a session was last in use
        (0 while one is: logind does not say when its last input came)."""
        return max(0.0, now_wall - self.since) if self.idle else 0.0


class LogindWatcher:
    """Follows logind's manager idle hint; :meth:`hint` returns the latest answer.

    Args:
        wake: called (from the thread) when logind announces a change, to wake the loop.
        bus: "SYSTEM" (which honours ``DBUS_SYSTEM_BUS_ADDRESS``) or a D-Bus address.
        retry_seconds: wait before connecting again after a failure (default :data:`RETRY_SECONDS`).
    """

    def __init__(
        self, wake: Callable[[], None] | None = None, bus: str = "SYSTEM", retry_seconds: float | None = None
    ) -> None:
        self.wake = wake
        self.bus = bus
        self.retry_seconds = RETRY_SECONDS if retry_seconds is None else retry_seconds
        self._hint: IdleHint | None = None
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._refresh = threading.Event()
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="plancton-logind", daemon=True)

    def start(self) -> None:
        """Start following logind in the background."""
        self._thread.start()

    def wait_answer(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first attempt to end; return whether it has."""
        return self._answered.wait(timeout)

    def hint(self) -> IdleHint | None:
        """Return logind's latest idle hint, or None when it cannot tell (no bus, no logind,
        no session). Asks the thread to read it again, since logind computes the idleness of
        a terminal session when asked and announces no change for it."""
        self._refresh.set()
        with self._lock:
            return self._hint

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close its connection; wait for it up to ``timeout`` seconds."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._follow()
            except (OSError, TimeoutError, ValueError, KeyError, IndexError, DBusErrorResponse) as error:
                self._set(None)
                self._failed(error)
            except Exception:
                self._set(None)
                log.exception("following logind failed; retrying in %g s", self.retry_seconds)
            self._answered.set()
            if self._stopping.wait(self.retry_seconds):
                return

    def _follow(self) -> None:
        """Connect, subscribe to the manager's property changes, and follow them until asked to stop."""
        with open_dbus_connection(bus=self.bus, auth_timeout=CALL_TIMEOUT_SECONDS) as connection:
            changes = {
                "type": "signal",
                "interface": PROPERTIES_INTERFACE,
                "member": "PropertiesChanged",
                "path": MANAGER_PATH,
            }
            # the bus matches the well-known name; a signal itself carries logind's unique name
            subscribe = message_bus.AddMatch(MatchRule(sender=BUS_NAME, **changes))
            unwrap_msg(connection.send_and_get_reply(subscribe, timeout=CALL_TIMEOUT_SECONDS))
            with connection.filter(MatchRule(**changes), bufsize=64) as signals:
                self._read(connection)
                self._answered.set()
                while not self._stopping.is_set():
                    try:
                        signal = connection.recv_until_filtered(signals, timeout=TURN_SECONDS)
                    except TimeoutError:
                        signal = None
                    if signal is not None and _names_idle(signal.body):
                        self._read(connection)
                        if self.wake is not None:
                            self.wake()
                    elif self._refresh.is_set():
                        self._read(connection)

    def _read(self, connection: DBusConnection) -> None:
        self._refresh.clear()
        manager = DBusAddress(MANAGER_PATH, bus_name=BUS_NAME, interface=MANAGER_INTERFACE)
        reply = connection.send_and_get_reply(Properties(manager).get_all(), timeout=CALL_TIMEOUT_SECONDS)
        properties = unwrap_msg(reply)[0]
        idle = bool(properties["IdleHint"][1])
        since = int(properties["IdleSinceHint"][1])
        # With no session at all logind cannot tell, yet still says "idle": since 0 up to
        # systemd 256, since its own start from 257 on. Idle with no session is no answer.
        cannot_tell = idle and (since == 0 or not self._has_sessions(connection, manager))
        self._set(None if cannot_tell else IdleHint(idle=idle, since=since / 1e6))
        if self._failing:
            log.info("logind answers on the system D-Bus again")
        self._failing = False

    def _has_sessions(self, connection: DBusConnection, manager: DBusAddress) -> bool:
        """Return whether logind has any session (a login on a seat, a terminal or ssh)."""
        call = new_method_call(manager, "ListSessions")
        return bool(unwrap_msg(connection.send_and_get_reply(call, timeout=CALL_TIMEOUT_SECONDS))[0])

    def _set(self, hint: IdleHint | None) -> None:
        with self._lock:
            self._hint = hint

    def _failed(self, error: BaseException) -> None:
        if self._failing:
            log.debug("logind still unavailable: %s", error)
            return
        self._failing = True
        log.warning(
            "cannot follow logind's idle hint on the system D-Bus (%s: %s); using terminal and input "
            "device times instead, trying again every %g s",
            type(error).__name__,
            error or "no answer",
            self.retry_seconds,
        )


def _names_idle(body: tuple[object, ...]) -> bool:
    """Given a PropertiesChanged body (interface, changed, invalidated), return whether it
    concerns the manager's idle hint."""
    if len(body) < 3 or body[0] != MANAGER_INTERFACE:
        return False
    changed, invalidated = body[1], body[2]
    names = set(changed) if isinstance(changed, dict) else set()
    names |= set(invalidated) if isinstance(invalidated, list) else set()
    return bool(names & IDLE_PROPERTIES)
