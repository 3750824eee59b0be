"""The cgroup parent that holds every pilot: its name for Docker, its CPU weight, its CPU use.

All pilots of an instance live under one parent cgroup (``/<instance>`` with Docker's
cgroupfs driver, ``<instance>.slice`` with the systemd driver: Podman's systemd manager
requires a slice and its cgroupfs manager refuses one, so the name follows the driver the
engine reports, here alone). A rootless engine's slice is made by its user's service manager,
inside that manager's cgroup (``user.slice/user-UID.slice/user@UID.service``), which must have
the CPU controller delegated for the pilots' CPU caps and weight. Giving that parent the
lowest CPU weight (cgroup v1 ``cpu.shares`` 2; v2 ``cpu.weight`` 1 and ``cpu.idle`` 1 where
the kernel has it) makes the kernel hand the CPU to the owner's processes within
milliseconds, whatever Plancton does. Its CPU accounting gives the pilots' own CPU use, so
the owner's load can be measured net of the pilots.
"""

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

CGROUP_ROOT = "/sys/fs/cgroup"
V1_LOWEST_SHARES = "2"
V1_DEFAULT_SHARES = "1024"
IDLE_SETTING = "cpu.idle 1"
V1_LOWEST = f"cpu.shares {V1_LOWEST_SHARES}"
V2_LOWEST_WEIGHT = "1"
NOT_SET = "not set yet"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
#: The CFS period of the pilots' CPU cap, in microseconds (the kernel's default).
CAP_PERIOD_US = 100_000
#: for each lowest-weight setting: the file, its lowest value, and an ordinary one
_LIFTS = {
    IDLE_SETTING: ("cpu.idle", "1", "0"),
    V1_LOWEST: ("cpu.shares", V1_LOWEST_SHARES, V1_DEFAULT_SHARES),
    f"cpu.weight {V2_LOWEST_WEIGHT}": ("cpu.weight", V2_LOWEST_WEIGHT, "100"),
}


#: The files of the parent's CPU folder that a daemon running as another user than root
#: writes (its CPU settings), with those a delegated cgroup's user gets (the processes' lists
#: and, on cgroup v2, the controllers of the cgroups below).
_HANDED_OVER = (
    "cpu.idle",
    "cpu.shares",
    "cpu.weight",
    "cgroup.procs",
    "tasks",
    "cgroup.threads",
    "cgroup.subtree_control",
)


def host_cgroup_version(root: str = CGROUP_ROOT) -> int:
    """Return the cgroup version of the host whose cgroup file systems are mounted at
    ``root``: 2 for the unified hierarchy alone, else 1 (hybrid hosts included)."""
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


@dataclass
class PilotCgroup:
    """The parent cgroup of one instance's pilots.

    Args:
        instance: the instance name, used as the cgroup's name.
        driver: Docker's cgroup driver, "cgroupfs" or "systemd".
        version: the cgroup version Docker uses, 1 or 2.
        root: where the cgroup file systems are mounted.
        engine_uid: the uid the engine runs as (None: unknown); a rootless engine's (any
            but 0) systemd slices are made by its user's service manager.
    """

    instance: str
    driver: str = "cgroupfs"
    version: int = 1
    root: str = CGROUP_ROOT
    engine_uid: int | None = None
    #: what gives the pilots the lowest weight now: "cpu.idle 1", "cpu.shares 2", ...
    setting: str = field(default=NOT_SET, compare=False)
    _lifts: int = field(default=0, compare=False, repr=False)
    _lift_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def docker_parent(self) -> str:
        """The ``cgroup_parent`` value to give Docker for every pilot."""
        return f"{self.instance}.slice" if self.driver == "systemd" else f"/{self.instance}"

    @property
    def _user_manager(self) -> bool:
        return self.driver == "systemd" and self.version == 2 and bool(self.engine_uid)

    @property
    def manager_folder(self) -> str:
        """The unified hierarchy's folder below which the engine's cgroups are made: the root,
        or a rootless engine's user's service manager (``user@UID.service``) under systemd."""
        if self._user_manager:
            uid = self.engine_uid
            return os.path.join(self.root, f"user.slice/user-{uid}.slice/user@{uid}.service")
        return self.root

    @property
    def cpu_folder(self) -> str:
        """The folder of the parent's CPU settings (``cpu.idle``, ``cpu.shares`` or ``cpu.weight``)."""
        return self._folder("cpu")

    def _folder(self, controller: str) -> str:
        relative = self.docker_parent.lstrip("/")
        if self.version == 2:
            return os.path.join(self.manager_folder, relative)
        return os.path.join(self.root, controller, relative)

    @property
    def _lowest_weight(self) -> tuple[str, str]:
        """The file of the CPU weight and its lowest value, where ``cpu.idle`` is missing."""
        return ("cpu.weight", V2_LOWEST_WEIGHT) if self.version == 2 else ("cpu.shares", V1_LOWEST_SHARES)

    def _without_cpu_controller(self) -> str | None:
        """Return why the pilots' cgroup cannot have the CPU controller (cgroup v2: it is not
        in the controllers of the folder above it), or None when it can or cannot be told."""
        if self.version != 2:
            return None
        controllers = _read(os.path.join(self.manager_folder, "cgroup.controllers"))
        if controllers is None or "cpu" in controllers.split():
            return None
        if self._user_manager:
            return (
                f"the CPU controller is not delegated to user {self.engine_uid}'s service manager "
                f"({self.manager_folder}/cgroup.controllers: {controllers or 'none'}), so the pilots get neither "
                f"their CPU caps nor the lowest CPU weight: as root, run systemctl edit user@.service, add "
                f"[Service] Delegate=cpu cpuset io memory pids, then restart user@{self.engine_uid}.service "
                "(or log out and in again)"
            )
        return (
            f"the kernel's CPU controller is not available in {self.manager_folder} "
            f"(cgroup.controllers: {controllers or 'none'}), so the pilots get neither their CPU caps nor the "
            "lowest CPU weight: check the cgroup setup"
        )

    def set_lowest_weight(self) -> str | None:
        """Give the parent cgroup the lowest CPU weight; return a warning if it cannot.

        ``cpu.idle`` (Linux 5.15+, both versions) puts the whole group under SCHED_IDLE: it
        then runs only on CPU time no one else wants. Without it, the lowest weight. With
        Docker's cgroupfs driver the folder is created here; a systemd slice is systemd's to
        create (the engine asks for it with the first pilot), and a slice already at
        ``CPUWeight=idle`` needs nothing more. :attr:`setting` says what is in force.
        """
        folder = self.cpu_folder
        weight = self._lowest_weight
        without_cpu = self._without_cpu_controller()
        if without_cpu:
            self.setting = "default weight"
            return without_cpu
        if self.driver == "systemd" and not os.path.isdir(folder):
            return None  # not there before its first pilot
        try:
            if self.driver != "systemd":
                os.makedirs(folder, exist_ok=True)
            if _read(os.path.join(folder, "cpu.idle")) == "1" or _write_if_present(
                os.path.join(folder, "cpu.idle"), "1"
            ):
                self.setting = IDLE_SETTING
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

    def _handed_over_paths(self) -> list[str]:
        folder = self.cpu_folder
        present = [os.path.join(folder, name) for name in _HANDED_OVER]
        return [folder, *(path for path in present if os.path.exists(path))]

    def hand_over(self, uid: int, gid: int) -> None:
        """Give a user the parent's CPU folder and the files in it that a daemon running as
        that user writes, so that it keeps, and lifts for a pause, the lowest weight root gave
        (:meth:`set_lowest_weight`, which creates the folder with the cgroupfs driver).

        Raises:
            OSError: the folder is not there, or its owner cannot be changed (not root).
        """
        for path in self._handed_over_paths():
            os.chown(path, uid, gid)

    def is_handed_over(self, uid: int) -> bool:
        """Return whether the parent's CPU folder is there with the lowest weight and, with
        its files, belongs to the user ``uid`` (as :meth:`hand_over` leaves it)."""
        folder = self.cpu_folder
        name, value = self._lowest_weight
        lowest = _read(os.path.join(folder, "cpu.idle")) == "1" or _read(os.path.join(folder, name)) == value
        try:
            owners = {os.stat(path).st_uid for path in self._handed_over_paths()}
        except OSError:
            return False
        return lowest and owners == {uid}

    def _fix(self, error: OSError) -> str:
        if self._user_manager:
            return f"give the slice the idle weight (systemctl --user set-property {self.docker_parent} CPUWeight=idle)"
        if self.driver == "systemd":
            return (
                f"give the slice the idle weight (systemctl set-property {self.docker_parent} CPUWeight=idle; "
                "./install does this)"
            )
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "run Plancton as root, or have root give it the cgroup first (./install does this)"
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
                with open(os.path.join(self.cpu_folder, "cpu.stat"), encoding="ascii") as handle:
                    for line in handle:
                        name, _, value = line.partition(" ")
                        if name == "usage_usec":
                            return int(value) / 1e6
                return None
            with open(os.path.join(self._folder("cpuacct"), "cpuacct.usage"), encoding="ascii") as handle:
                return int(handle.read()) / 1e9
        except (OSError, ValueError):
            return None

    @property
    def exists(self) -> bool:
        """Whether the parent cgroup is there (a systemd slice appears with its first pilot)."""
        return os.path.isdir(self.cpu_folder)

    def cpu_counter(self) -> tuple[str, float] | None:
        """Return what identifies the pilots' CPU counter (this boot and the cgroup folder, so
        that a counter made again reads as a new one) and the CPU seconds it holds, or None
        when it cannot be read."""
        seconds = self.cpu_seconds()
        folder = self._folder("cpu" if self.version == 2 else "cpuacct")
        try:
            inode = os.stat(folder).st_ino
        except OSError:
            return None
        boot = _read(BOOT_ID) or "unknown boot"
        return (f"{boot}:{folder}:{inode}", seconds) if seconds is not None else None

    def set_cpu_cap(self, cores: float | None) -> str | None:
        """Cap the CPU of the pilots as a whole at ``cores`` (None: lift the cap), through the
        parent cgroup's CFS bandwidth (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); return
        a warning naming the fix if it cannot. Nothing to do before the parent exists (a
        systemd slice, before its first pilot: see :attr:`exists`), nor to lift a cap that
        is not there."""
        folder = self._folder("cpu")
        if not os.path.isdir(folder) or (cores is None and self._uncapped(folder)):
            return None  # a daemon that may not write the cgroup has no cap of its own to lift
        quota = round(cores * CAP_PERIOD_US) if cores is not None else None
        try:
            if self.version == 2:
                _write(os.path.join(folder, "cpu.max"), f"{quota if quota is not None else 'max'} {CAP_PERIOD_US}")
            else:
                _write(os.path.join(folder, "cpu.cfs_period_us"), str(CAP_PERIOD_US))
                _write(os.path.join(folder, "cpu.cfs_quota_us"), str(quota if quota is not None else -1))
        except OSError as error:
            return (
                f"cannot cap the pilots' CPU at {cores:g} cores for lend_cores ({error.filename}: {error.strerror}); "
                f"the pilots lent to the owner run uncapped, at the lowest CPU weight: {self._cap_fix(error)}"
                if cores is not None
                else f"cannot lift the pilots' CPU cap ({error.filename}: {error.strerror}): {self._fix(error)}"
            )
        return None

    def _cap_fix(self, error: OSError) -> str:
        """Return the fix for a cap the kernel refused: one it takes, or what the cgroup needs."""
        if error.errno != errno.EINVAL:
            return self._fix(error)
        if self.version == 1:
            return (
                "on cgroup v1 the kernel takes no cap on the pilots as a whole below one pilot's own "
                "(cpus_per_dock), nor under 0.01 cores: set lend_cores to at least cpus_per_dock"
            )
        return "the kernel takes no cap under 0.01 cores: set lend_cores to at least 0.01"

    def _uncapped(self, folder: str) -> bool:
        """Whether the parent cgroup in ``folder`` has no CPU cap now."""
        if self.version == 2:
            value = _read(os.path.join(folder, "cpu.max"))
            return value is not None and value.split()[:1] == ["max"]
        return _read(os.path.join(folder, "cpu.cfs_quota_us")) == "-1"

    @contextlib.contextmanager
    def lifted_for_freeze(self) -> Iterator[None]:
        """Within the block, give the pilots an ordinary CPU weight if they have the lowest,
        so that the engine's freezer can pause them; restore the lowest weight after the last
        such block ends.

        The freezer freezes a task only when the task runs. cgroup v1's OCI runtime gives up
        after some milliseconds ("unable to freeze"): under the lowest weight, with the
        owner's work on every core, pilots do not run that soon. cgroup v2's runtime waits
        for the freeze, but as long as the pilots do not run: a minute was seen with the
        owner on both cores of an emulated machine. Frozen, pilots use no CPU whatever their
        weight, so the lift lasts only as long as the pause requests. Blocks may overlap
        (pauses run on several threads); errors writing the weight are ignored (a slice whose
        weight systemd keeps is then frozen as the runtime manages), so a pause is never
        prevented, and :meth:`set_lowest_weight` says what is in force.
        """
        lift = self.setting in _LIFTS
        if lift:
            self._set_lift(+1)
        try:
            yield
        finally:
            if lift:
                self._set_lift(-1)

    def _set_lift(self, change: int) -> None:
        name, lowest, ordinary = _LIFTS[self.setting]
        with self._lift_lock:
            self._lifts += change
            if (change > 0 and self._lifts == 1) or self._lifts == 0:
                _write_if_present(os.path.join(self.cpu_folder, name), ordinary if self._lifts else lowest)


def _write(path: str, value: str) -> None:
    """Write a cgroup file; an error the kernel gives on the write names the file too."""
    try:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(value)
    except OSError as error:
        if error.filename is None:
            raise OSError(error.errno, error.strerror, path) from error
        raise


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
