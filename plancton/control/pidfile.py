"""A pidfile held under an exclusive ``flock`` for the daemon's whole life.

The lock, not the file's existence, says whether a daemon runs: a pidfile left by a killed
daemon is unlocked and is simply taken over, and of two daemons starting at the same moment
exactly one gets the lock.
"""

import contextlib
import errno
import fcntl
import os
from types import TracebackType

import psutil

from plancton.errors import AlreadyRunning, PlanctonError


def read_pid(path: str) -> int | None:
    """Return the pid written in a pidfile, or None when there is none or it is garbage."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read(32).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_plancton_process(pid: int) -> bool:
    """Return whether a live process with this pid is a Plancton daemon (not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return any("plancton" in part for part in process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def running_pid(path: str) -> int | None:
    """Return the pid of the daemon that this pidfile names, if that daemon is alive."""
    pid = read_pid(path)
    return pid if pid is not None and is_plancton_process(pid) else None


class PidFile:
    """Context manager that locks and writes the pidfile, and removes it on exit.

    Args:
        path: where the pidfile lives; symlinks there are never followed.

    Raises (on enter):
        AlreadyRunning: another process holds the lock.
        PlanctonError: the pidfile cannot be created.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._descriptor: int | None = None

    def __enter__(self) -> "PidFile":
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Lock the pidfile and write this process's pid in it."""
        for _ in range(10):
            descriptor = self._open_locked()
            # the file may have been removed and recreated between open and lock:
            # only a lock on the file that is at the path now counts
            try:
                same = os.fstat(descriptor).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(descriptor, 0)
                os.write(descriptor, f"{os.getpid()}\n".encode("ascii"))
                self._descriptor = descriptor
                return
            os.close(descriptor)
        raise PlanctonError(f"cannot take the pidfile {self.path}: it keeps being replaced")

    def _open_locked(self) -> int:
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise PlanctonError(f"refusing the pidfile {self.path}: it is a symlink") from None
            raise PlanctonError(f"cannot create the pidfile {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise AlreadyRunning(read_pid(self.path), self.path) from None
        return descriptor

    def release(self) -> None:
        """Remove the pidfile and drop the lock (removal first, so no one locks a dead file)."""
        if self._descriptor is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._descriptor)
        self._descriptor = None
