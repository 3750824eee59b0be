"""What a farm made on the host, written down as it is made, and undone from that record.

Each thing the farm makes (a process, a network namespace, a user, a folder, a cgroup) is
appended to a ledger file, one JSON line, before or as soon as it exists. :func:`sweep` undoes
the ledger newest first and is safe to run twice: the farm runs it when it stops, and
``tests/farm/run`` runs it again at exit, so that a run cut short by Ctrl-C, a failure or a
killed test process still leaves nothing behind. :class:`HostState` is what the runner's final
check compares before and after a run.

Every process the farm starts inherits :data:`RUN_MARK` in its environment: the final check
finds by it what would otherwise escape the ledger (a process a killed parent left behind), and
:func:`sweep` ends those by their pid.

    python -m tests.farm.ledger sweep              (the ledger of the run that $PLANCTON_FARM_RUN names)
    python -m tests.farm.ledger snapshot FILE
    python -m tests.farm.ledger check FILE
"""

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass

import psutil

from plancton.platform.cgroups import PilotCgroup
from tests.farm.layout import NETNS_FOLDER, ledger_path
from tests.farm.support import services

#: The environment variable that marks every process of a farm run, with the run's id.
RUN_MARK = "PLANCTON_FARM_RUN"
STOP_SECONDS = 30.0
CRON_SPOOL = "/var/spool/cron/crontabs"
#: The kinds of entries, in the order a sweep would undo a run that made one of each.
KINDS = ("process", "cgroup", "user", "namespace", "folder", "file")


@dataclass(frozen=True)
class Entry:
    """One thing a farm made: its kind (one of :data:`KINDS`) and what names it."""

    kind: str
    value: str


class Ledger:
    """A ledger file: :meth:`add` appends an entry at once, so that it survives a crash."""

    def __init__(self, path: str) -> None:
        self.path = path

    def add(self, kind: str, value: str) -> None:
        """Write down that the farm made this thing.

        Raises:
            ValueError: ``kind`` is not one of :data:`KINDS`.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown ledger entry kind {kind!r}")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(Entry(kind, value))) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def add_process(self, pid: int) -> None:
        """Write down a process the farm started, by its pid and start time (so that a later
        process that reuses the pid is never mistaken for it)."""
        self.add("process", f"{pid}:{psutil.Process(pid).create_time():.2f}")

    def entries(self) -> list[Entry]:
        """Return the entries so far, oldest first (none when there is no ledger file)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                return [Entry(**json.loads(line)) for line in handle if line.strip()]
        except FileNotFoundError:
            return []


def stop_process(pid: int, started: float | None = None, seconds: float = STOP_SECONDS) -> None:
    """End a process by its pid, SIGTERM then SIGKILL after ``seconds``, unless it is gone or
    (when ``started`` is given) the pid now belongs to a process started at another time."""
    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > 0.05:
            return
        process.terminate()
        try:
            process.wait(seconds)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(10)
    except psutil.NoSuchProcess:
        pass


def marked_processes(mark: str) -> list[psutil.Process]:
    """Return the live processes that carry ``mark`` in :data:`RUN_MARK`, but for this one and
    those it runs under."""
    found = []
    own = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    for process in psutil.process_iter():
        if process.pid in own:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(RUN_MARK) == mark:
                found.append(process)
    return found


def namespaces() -> set[str]:
    """Return the named network namespaces (``ip netns list``)."""
    try:
        return set(os.listdir(NETNS_FOLDER))
    except FileNotFoundError:
        return set()


def mounts_below(folder: str) -> list[str]:
    """Return the mount points at or below ``folder``, deepest first."""
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == folder or point.startswith(folder.rstrip("/") + "/"):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def remove_folder(folder: str) -> None:
    """Unmount what is mounted below a folder (a killed engine's leftovers), then remove it."""
    for point in mounts_below(folder):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    shutil.rmtree(folder, ignore_errors=True)


def remove_cgroup(name: str) -> None:
    """End what still runs in a cgroup the farm made (a pilot whose engine is gone) by its
    pid, then remove the cgroup in every hierarchy."""
    services.kill_instance_processes(name)
    services.remove_cgroups_once_empty([PilotCgroup(name, "cgroupfs", services.cgroup_version())], 30)


def remove_user(name: str) -> None:
    """Remove a user the farm made, with its crontab and home."""
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        subprocess.run(["crontab", "-r", "-u", name], capture_output=True, check=False)
        subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)


def undo(entry: Entry) -> None:
    """Undo one entry of a ledger; what is gone already is fine."""
    if entry.kind == "process":
        pid, _, started = entry.value.partition(":")
        stop_process(int(pid), float(started))
    elif entry.kind == "cgroup":
        remove_cgroup(entry.value)
    elif entry.kind == "user":
        remove_user(entry.value)
    elif entry.kind == "namespace":
        if entry.value in namespaces():
            subprocess.run(["ip", "netns", "delete", entry.value], capture_output=True, check=False)
    elif entry.kind == "folder":
        remove_folder(entry.value)
    elif entry.kind == "file":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.value)


def sweep(ledger: Ledger) -> None:
    """Undo every entry of a ledger, newest first, after ending the processes that carry this
    run's mark outside the ledger; then remove the ledger file."""
    mark = os.environ.get(RUN_MARK)
    entries = ledger.entries()
    for entry in reversed(entries):
        if entry.kind == "process":
            undo(entry)
    if mark:
        for process in marked_processes(mark):
            stop_process(process.pid, process.create_time())
    for entry in reversed(entries):
        if entry.kind != "process":
            undo(entry)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ledger.path)


@dataclass(frozen=True)
class HostState:
    """What a farm could leave on the host."""

    namespaces: frozenset[str]
    links: frozenset[str]
    mounts: frozenset[str]
    cgroups: frozenset[str]
    users: frozenset[str]
    crontabs: frozenset[str]

    @classmethod
    def take(cls) -> "HostState":
        """Look at the host now."""
        links = os.listdir("/sys/class/net")
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            mounts = {line.split()[4] for line in handle}
        crontabs = os.listdir(CRON_SPOOL) if os.access(CRON_SPOOL, os.R_OK) else []
        return cls(
            frozenset(namespaces()),
            frozenset(links),
            frozenset(mounts),
            frozenset(services.cgroup_names()),
            frozenset(user.pw_name for user in pwd.getpwall()),
            frozenset(crontabs),
        )

    def left_since(self, before: "HostState") -> list[str]:
        """Return what is here now that was not at ``before``, one line per kind."""
        lines = []
        for kind in ("namespaces", "links", "mounts", "cgroups", "users", "crontabs"):
            new = sorted(getattr(self, kind) - getattr(before, kind))
            if new:
                lines.append(f"{kind} left behind: {', '.join(new[:20])}")
        return lines

    def save(self, path: str) -> None:
        """Write this state to a file."""
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({kind: sorted(values) for kind, values in asdict(self).items()}, handle)

    @classmethod
    def load(cls, path: str) -> "HostState":
        """Read a state that :meth:`save` wrote."""
        with open(path, encoding="utf-8") as handle:
            return cls(**{kind: frozenset(values) for kind, values in json.load(handle).items()})


def leftovers(before: HostState) -> list[str]:
    """Return what the run left on the host since ``before``: things, and marked processes."""
    lines = HostState.take().left_since(before)
    mark = os.environ.get(RUN_MARK)
    if mark:
        left = [f"{process.pid} {' '.join(process.cmdline())}" for process in marked_processes(mark)]
        if left:
            lines.append(f"processes left running: {'; '.join(left[:10])}")
    return lines


def main(arguments: list[str]) -> int:
    """Run ``sweep`` (this run's ledger), ``snapshot FILE`` or ``check FILE``; return the exit
    code (1: the check found something left)."""
    action, *path = arguments
    if action == "sweep":
        sweep(Ledger(ledger_path(os.environ[RUN_MARK])))
        return 0
    if action == "snapshot":
        HostState.take().save(path[0])
        return 0
    lines = leftovers(HostState.load(path[0]))
    for line in lines:
        print(f"tests/farm/run: {line}", file=sys.stderr)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
