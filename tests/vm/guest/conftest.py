"""Fixtures shared by the guest tests of the VM tier (modern_host.py, podman_host.py)."""

from collections.abc import Iterator

import pytest

from tests.support.owner_load import OwnerLoad


@pytest.fixture
def owner_load() -> Iterator[OwnerLoad]:
    """The owner's load, started when the test asks (outside Plancton's slice, in the test
    unit's cgroup); ended afterwards."""
    load = OwnerLoad()
    yield load
    load.stop()
