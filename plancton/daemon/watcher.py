"""The configuration watcher: notices a changed file and loads it (parse → validate → swap).

An invalid new file is logged and the configuration in force is kept: nothing here may
end the daemon.
"""

import logging
import time
from collections.abc import Callable

from plancton.config import files, loader
from plancton.config.schema import KEYS, Config
from plancton.errors import ConfigError
from plancton.platform.host import host_facts

log = logging.getLogger(__name__)


class ConfigWatcher:
    """Watches one configuration file.

    Args:
        path: the configuration file.
        clock: a monotonic clock, for the interval between two looks.
        wall: the wall clock, to tell a file still being written.
    """

    def __init__(
        self, path: str, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.clock = clock
        self.wall = wall
        self._fingerprint = files.fingerprint(path)
        self._checked = clock()
        #: whether the file on disk was refused at the last look (the daemon keeps its last good one)
        self.rejected = False

    def changed(self, interval: float) -> bool:
        """Return whether, ``interval`` seconds or more after the last look, the file's
        modification time or content changed. A file written within the last second is
        looked at again at the next call, so that a half-written file is never applied.
        """
        if self.clock() - self._checked < interval:
            return False
        current = files.fingerprint(self.path)
        if current != self._fingerprint and files.settling(current, self.wall()):
            return False
        self._checked = self.clock()
        return current != self._fingerprint

    def load(self, old: Config) -> Config | None:
        """Load the file again; return the new configuration when it is valid and differs from
        ``old``, else None (the reason is logged)."""
        self._fingerprint = files.fingerprint(self.path)
        rejected = f"configuration {self.path} rejected, keeping revision {old.revision}"
        self.rejected = True  # until the file proves good
        try:
            new, warnings = loader.load(self.path, host_facts())
        except ConfigError as error:
            log.error("%s: %s", rejected, error.describe())
            return None
        except Exception:
            log.exception("%s: unexpected error while loading it", rejected)
            return None
        for warning in warnings:
            log.warning("%s", warning)
        if new.instance != old.instance:
            log.error(
                "%s: instance cannot change from %s to %s while running; restart the daemon to rename it",
                rejected,
                old.instance,
                new.instance,
            )
            return None
        self.rejected = False
        if new.revision == old.revision:
            log.info("configuration unchanged (revision %s)", new.revision)
            return None
        changed = [name for name in KEYS if getattr(new, name) != getattr(old, name)]
        log.info("configuration revision %s applied (changed: %s)", new.revision, ", ".join(changed) or "nothing")
        return new
