"""Fixtures shared by the guest tests of the VM tier (modern_host.py, podman_host.py)."""

import subprocess
from collections.abc import Iterator

import pytest


class OwnerLoad:
    """Two busy loops of the host's owner outside Plancton's slice (in the test unit's cgroup)."""

    def __init__(self) -> None:
        self.loops: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start the two busy loops."""
        self.loops.extend(subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2))

    def stop(self) -> None:
        """End the busy loops: the owner is idle again."""
        for loop in self.loops:
            loop.kill()
            loop.wait()
        self.loops.clear()


@pytest.fixture
def owner_load() -> Iterator[OwnerLoad]:
    """The owner's load, started when the test asks; ended afterwards."""
    load = OwnerLoad()
    yield load
    load.stop()
