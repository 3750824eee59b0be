"""The cgroup parent that holds every pilot: its name for Docker, its CPU weight, its CPU use.

All pilots of an instance live under one parent cgroup (``/<instance>`` with Docker's
cgroupfs driver, ``<instance>.slice`` with the systemd driver). Giving that parent the
lowest CPU weight (cgroup v1 ``cpu.shares`` 2; v2 ``cpu.weight`` 1 and ``cpu.idle`` 1 where
the kernel has it) makes the kernel hand the CPU to the owner's processes within
milliseconds, whatever Plancton does. Its CPU accounting gives the pilots' own CPU use, so
the owner's load can be measured net of the pilots.
"""

import errno
import os
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
V1_LOWEST_SHARES = "2"
V2_LOWEST_WEIGHT = "1"


@dataclass(frozen=True)
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
        """Create the parent cgroup with the lowest CPU weight; return a warning if it cannot.

        ``cpu.idle`` (Linux 5.15+, both versions) puts the whole group under SCHED_IDLE: it
        then runs only on CPU time no one else wants. Without it, the lowest weight.
        """
        folder = self._folder("cpu")
        weight = ("cpu.weight", V2_LOWEST_WEIGHT) if self.version == 2 else ("cpu.shares", V1_LOWEST_SHARES)
        try:
            os.makedirs(folder, exist_ok=True)
            if _write_if_present(os.path.join(folder, "cpu.idle"), "1"):
                return None
            _write(os.path.join(folder, weight[0]), weight[1])
        except OSError as error:
            fix = (
                "run Plancton as root to fix this"
                if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                else "check the cgroup setup"
            )
            return (
                f"cannot give the pilots the lowest CPU weight ({error.filename}: {error.strerror}); "
                f"they still run with cpu shares 2 each, but as a group compete with the owner at the "
                f"default weight: {fix}"
            )
        return None

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


def _write_if_present(path: str, value: str) -> bool:
    """Write a cgroup setting the kernel may not have; return whether it took effect."""
    if not os.path.exists(path):
        return False
    try:
        _write(path, value)
    except OSError:
        return False
    return True
