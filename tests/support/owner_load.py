"""The host's owner at work: busy loops outside Plancton's pilots, one per core asked for.

It needs the standard library alone, so that the VM tier's guest tests, which have pytest and
nothing more, use it as the tests on this host do.
"""

import subprocess
from dataclasses import dataclass, field


@dataclass
class OwnerLoad:
    """Busy loops standing for the host's owner at work, one per core asked for."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, cores: int) -> None:
        """Start ``cores`` processes that each keep one core busy."""
        for _ in range(cores):
            self.processes.append(subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"]))

    def stop(self) -> None:
        """Stop every busy loop by its pid: the owner is idle again."""
        for process in self.processes:
            process.kill()
            process.wait()
        self.processes.clear()
