"""Whether a person is at the host: keyboard and mouse use, battery, and local time.

Each source is tried as an unprivileged user and may be missing; what the host offers is
chosen here, and the policy only sees a :class:`~plancton.core.policy.Presence`:

- keyboard and mouse: logind's idle hint over the system D-Bus (:mod:`plancton.platform.logind`),
  and, as HTCondor does, the access times of the terminals of logged-in users
  (``/dev/pts/N``, ``/dev/ttyN``) and of the readable ``/dev/input/event*`` devices; the
  most recent use any of them reports counts;
- battery: ``/sys/class/power_supply`` (a ``Mains`` supply online means mains; otherwise a
  ``Battery`` discharging means battery; no supply at all means mains);
- local time: the wall clock in the host's time zone, for ``run_hours``.
"""

import glob
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psutil

from plancton.core.policy import Presence
from plancton.platform.logind import LogindWatcher

log = logging.getLogger(__name__)

POWER_SUPPLY_ROOT = "/sys/class/power_supply"
DEVICE_ROOT = "/dev"
#: The first sample waits this long at most for logind's first answer, so that a daemon
#: starting on a workstation does not take its owner for absent (or unknown) for one loop.
FIRST_ANSWER_SECONDS = 0.5


@dataclass(frozen=True)
class InputReading:
    """Seconds since a keyboard or mouse was last used, and which source says so."""

    seconds: float
    source: str


def terminal_reading(now_wall: float, device_root: str = DEVICE_ROOT) -> InputReading | None:
    """Given the wall-clock time, return the least idle terminal of a logged-in user, or
    None when no logged-in user has a terminal whose times can be read.

    A terminal's access time moves when its user types (the kernel updates it at most every
    8 seconds); ``stat`` needs no permission on the device.
    """
    times = []
    for user in psutil.users():
        terminal = user.terminal or ""
        if not terminal or terminal.startswith(":"):
            continue  # an X display, not a device
        try:
            times.append(os.stat(os.path.join(device_root, terminal)).st_atime)
        except (OSError, ValueError):
            continue
    return InputReading(max(0.0, now_wall - max(times)), "terminals") if times else None


def input_device_reading(now_wall: float, device_root: str = DEVICE_ROOT) -> InputReading | None:
    """Given the wall-clock time, return the least idle readable ``input/event*`` device, or
    None when none is readable (they usually belong to root and the input group)."""
    times = []
    for path in glob.glob(os.path.join(device_root, "input", "event*")):
        if not os.access(path, os.R_OK):
            continue
        try:
            times.append(os.stat(path).st_atime)
        except OSError:
            continue
    return InputReading(max(0.0, now_wall - max(times)), "input devices") if times else None


class PowerReader:
    """Reads whether the host runs on battery from sysfs; a malformed entry is skipped with
    a warning (once per entry).

    Args:
        root: the ``power_supply`` class folder (a parameter so that tests use a fake one).
    """

    def __init__(self, root: str = POWER_SUPPLY_ROOT) -> None:
        self.root = root
        self._warned: set[str] = set()

    def on_battery(self) -> bool:
        """Return True when no mains supply is online and a battery is discharging."""
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return False  # no power_supply class: a host without batteries
        mains_online, discharging = False, False
        for name in names:
            supply = self._read(name)
            if supply is None:
                continue
            kind, state = supply
            mains_online = mains_online or (kind == "Mains" and state == "1")
            discharging = discharging or (kind == "Battery" and state == "Discharging")
        return discharging and not mains_online

    def _read(self, name: str) -> tuple[str, str] | None:
        """Return a supply's type and its online flag (Mains) or status (Battery); None for
        another type, or for an entry that cannot be read (with a warning)."""
        folder = os.path.join(self.root, name)
        try:
            kind = _read_line(os.path.join(folder, "type"))
            if kind == "Mains":
                online = _read_line(os.path.join(folder, "online"))
                if online not in ("0", "1"):
                    raise ValueError(f"online is {online!r}, expected 0 or 1")
                return kind, online
            if kind == "Battery":
                status = _read_line(os.path.join(folder, "status"))
                if not status:
                    raise ValueError("status is empty")
                return kind, status
            return None
        except (OSError, ValueError, UnicodeDecodeError) as error:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("power supply %s skipped: %s", folder, getattr(error, "strerror", None) or error)
            return None


def _read_line(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read(256).strip()


class PresenceSensor:
    """Tells the policy whether a person is at the host; chooses its sources once.

    Args:
        input_idle: the ``input_idle`` key: when 0, keyboard and mouse are not looked at and
            logind is not asked.
        run_on_battery: the ``run_on_battery`` key: when true, the battery is not read.
        wake: called from a background thread when logind announces a change, so that the
            loop decides again at once (for example ``threading.Event.set``).
        power_supply_root, device_root: the sysfs and /dev folders (parameters for tests).
        bus: the D-Bus to find logind on ("SYSTEM" honours ``DBUS_SYSTEM_BUS_ADDRESS``).
        local_time: turns a wall-clock time into the host's local time.
    """

    def __init__(
        self,
        input_idle: float,
        run_on_battery: bool,
        wake: Callable[[], None] | None = None,
        *,
        power_supply_root: str = POWER_SUPPLY_ROOT,
        device_root: str = DEVICE_ROOT,
        bus: str = "SYSTEM",
        local_time: Callable[[float], datetime] = datetime.fromtimestamp,
    ) -> None:
        self.wake = wake
        self.device_root = device_root
        self.bus = bus
        self.local_time = local_time
        self.power = PowerReader(power_supply_root)
        self.input_idle = 0.0
        self.run_on_battery = run_on_battery
        self._logind: LogindWatcher | None = None
        self._unknown_said = False
        self.configure(input_idle, run_on_battery)

    def configure(self, input_idle: float, run_on_battery: bool) -> None:
        """Follow new values of the keys (after a reload); logind is followed from the first
        time ``input_idle`` is set until :meth:`close`. An ``input_idle`` set anew is told
        again, once, when nothing can tell when a keyboard was last used."""
        if input_idle and not self.input_idle:
            self._unknown_said = False
        self.input_idle, self.run_on_battery = input_idle, run_on_battery
        if input_idle and self._logind is None:
            self._logind = LogindWatcher(self.wake, self.bus)
            self._logind.start()
            self._logind.wait_answer(FIRST_ANSWER_SECONDS)

    def sample(self, now_wall: float) -> Presence:
        """Given the wall-clock time, return what the host says of its owner now. Never waits
        for D-Bus: logind's answer is the latest the background thread received."""
        reading = self._input(now_wall) if self.input_idle else None
        return Presence(
            input_idle_seconds=reading.seconds if reading else None,
            input_source=reading.source if reading else "",
            on_battery=False if self.run_on_battery else self.power.on_battery(),
            local_time=self.local_time(now_wall),
        )

    def close(self) -> None:
        """Stop following logind (ends its thread and connection)."""
        if self._logind is not None:
            self._logind.stop()
            self._logind = None

    def _input(self, now_wall: float) -> InputReading | None:
        """Return the most recent input any source reports, or None (said once in the log)."""
        readings = [
            terminal_reading(now_wall, self.device_root),
            input_device_reading(now_wall, self.device_root),
        ]
        hint = self._logind.hint() if self._logind is not None else None
        if hint is not None:
            readings.append(InputReading(hint.seconds_idle(now_wall), "logind"))
        known = [reading for reading in readings if reading is not None]
        if not known:
            if not self._unknown_said:
                log.warning(
                    "input_idle is set but nothing tells when a keyboard or mouse was last used (no logind "
                    "session, no terminal of a logged-in user, no readable /dev/input/event*): the owner "
                    "counts as present and pilots do not run; set input_idle: 0 on a host without a person"
                )
            self._unknown_said = True
            return None
        if self._unknown_said:
            log.info("keyboard and mouse use can be told again (%s)", ", ".join(r.source for r in known))
        self._unknown_said = False
        return min(known, key=lambda reading: reading.seconds)
