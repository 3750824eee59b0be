"""The host's owner at work: busy loops outside Plancton's pilots, one per core asked for.

It needs the standard library alone, so that the VM tier's guest tests, which have pytest and
nothing more, use it as the tests on this host do.
"""

import subprocess
from dataclasses import dataclass, field

#: The policy of the tests that load every core as the owner (Work Queue, HTCondor): the busy
#: loops leave no idle CPU, so the owner counts as busy; below 75% it is idle again. The margin
#: matters: with 99% and 98% the pool was once refilled, paused and stopped over and over while
#: the loops still ran (pilots starting and stopping use some CPU, which the owner's figure
#: leaves out, so it can dip just under 98%). Should the load of other processes alone reach
#: 95%, pilots are reclaimed earlier: the tests hold either way.
OWNER_POLICY = {
    "owner_busy_percent": 95,
    "owner_idle_percent": 75,
    "cpu_pressure_percent": 100,
    "pause_delay": 1,
    "grace_kill": 2,
    "grace_spawn": 0,
    "main_sleep": 0.5,
}


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
