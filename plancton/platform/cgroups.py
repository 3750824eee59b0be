"""The cgroup parent that holds every pilot: its name for Docker, its CPU weight, its CPU use.

All pilots of an instance live under one parent cgroup (``/<instance>`` with Docker's
cgroupfs driver, ``<instance>.slice`` with the systemd driver). Giving that parent the
lowest CPU weight (cgroup v1 ``cpu.shares`` 2; v2 ``cpu.weight`` 1 and ``cpu.idle`` 1 where
the kernel has it) makes the kernel hand the CPU to the owner's processes within
milliseconds, whatever Plancton does. Its CPU accounting gives the pilots' own CPU use, so
the owner's load can be measured net of the pilots.
"""

import contextlib
import errno
import os
from dataclasses import dataclass, field

CGROUP_ROOT = "/sys/fs/cgroup"
V1_LOWEST_SHARES = "2"
V2_LOWEST_WEIGHT = "1"
NOT_SET = "not set yet"


@dataclass
class PilotCgroup:
    """The parent cgroup of one instance's pilots.

    Args:
        instance: the instance name, used as the cgroup's name.
        driver: Docker's cgroup driver, "cgroupfs" or "systemd".
        version: the cgroup version Docker uses, 1 or 2.
        root: where the cgroup file systems are mounted.
    """

    instance: str
    driver: str = "cgroupfs"
    version: int = 1
    root: str = CGROUP_ROOT
    #: what gives the pilots the lowest weight now: "cpu.idle 1", "cpu.shares 2", ...
    setting: str = field(default=NOT_SET, compare=False)

    @property
    def docker_parent(self) -> str:
        """The ``cgroup_parent`` value to give Docker for every pilot."""
        return f"{self.instance}.slice" if self.driver == "systemd" else f"/{self.instance}"

    def _folder(self, controller: str) -> str:
        relative = self.docker_parent.lstrip("/")
        if self.version == 2:
            return os.path.join(self.root, relative)
        return os.path.join(self.root, controller, relative)

    def set_lowest_weight(self) -> str | None:
        """Give the parent cgroup the lowest CPU weight; return a warning if it cannot.

        ``cpu.idle`` (Linux 5.15+, both versions) puts the whole group under SCHED_IDLE: it
        then runs only on CPU time no one else wants. Without it, the lowest weight. With
        Docker's cgroupfs driver the folder is created here; a systemd slice is systemd's to
        create (the engine asks for it with the first pilot), and a slice already at
        ``CPUWeight=idle`` needs nothing more. :attr:`setting` says what is in force.
        """
        folder = self._folder("cpu")
        weight = ("cpu.weight", V2_LOWEST_WEIGHT) if self.version == 2 else ("cpu.shares", V1_LOWEST_SHARES)
        if self.driver == "systemd" and not os.path.isdir(folder):
            return None  # not there before its first pilot
        try:
            if self.driver != "systemd":
                os.makedirs(folder, exist_ok=True)
            if _read(os.path.join(folder, "cpu.idle")) == "1" or _write_if_present(
                os.path.join(folder, "cpu.idle"), "1"
            ):
                self.setting = "cpu.idle 1"
                return None
            _write(os.path.join(folder, weight[0]), weight[1])
            self.setting = f"{weight[0]} {weight[1]}"
        except OSError as error:
            self.setting = "default weight"
            return (
                f"cannot give the pilots the lowest CPU weight ({error.filename}: {error.strerror}); "
                f"they still run with cpu shares 2 each, but as a group compete with the owner at the "
                f"default weight: {self._fix(error)}"
            )
        return None

    def _fix(self, error: OSError) -> str:
        if self.driver == "systemd":
            return (
                f"give the slice the idle weight (systemctl set-property {self.docker_parent} CPUWeight=idle; "
                "./install does this)"
            )
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "run Plancton as root to fix this"
        return "check the cgroup setup"

    def remove(self) -> list[str]:
        """Remove the parent cgroup's folders that are empty (no pilot left), with the empty
        cgroups a runtime may leave below them for containers already gone; return the parent
        folders removed. A cgroup in which a process runs is never removed (the kernel refuses
        it). A systemd slice is left to systemd. Never raises."""
        if self.driver == "systemd":
            return []
        relative = self.docker_parent.lstrip("/")
        if self.version == 2:
            candidates = [os.path.join(self.root, relative)]
        else:
            try:
                controllers = sorted(os.listdir(self.root))
            except OSError:
                return []
            candidates = [os.path.join(self.root, controller, relative) for controller in controllers]
        removed = []
        for folder in candidates:
            for below, _, _ in os.walk(folder, topdown=False):
                if below != folder:
                    with contextlib.suppress(OSError):
                        os.rmdir(below)
            try:
                os.rmdir(folder)
            except OSError:
                continue
            removed.append(folder)
        return removed

    def cpu_seconds(self) -> float | None:
        """Return the pilots' total CPU time in seconds so far, or None when not readable."""
        try:
            if self.version == 2:
                with open(os.path.join(self._folder("cpu"), "cpu.stat"), encoding="ascii") as handle:
                    for line in handle:
                        name, _, value = line.partition(" ")
                        if name == "usage_usec":
                            return int(value) / 1e6
                return None
            with open(os.path.join(self._folder("cpuacct"), "cpuacct.usage"), encoding="ascii") as handle:
                return int(handle.read()) / 1e9
        except (OSError, ValueError):
            return None


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _write_if_present(path: str, value: str) -> bool:
    """Write a cgroup setting the kernel may not have; return whether it took effect."""
    if not os.path.exists(path):
        return False
    try:
        _write(path, value)
    except OSError:
        return False
    return True
