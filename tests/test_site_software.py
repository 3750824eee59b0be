"""The site's software reaches running pilots as at the original's Grid site: CVMFS, mounted
on each node by an automounter under a shared /cvmfs, bound into the pilots. A repository
mounted after the pilots started is seen inside them when the bind asks for slave
propagation, and the automounter mounting it again (an expiry, a restart) leaves no pilot with
the mount it had before.

A tmpfs stands in for a CVMFS repository (a FUSE mount): what is under test is how a mount
made on the host reaches a running pilot, which is the same for both."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import BOTH_ENGINES, STEADY_POLICY, Installation, wait_until
from tests.support import services

pytestmark = pytest.mark.docker
REPOSITORY = "sft.example.org"


@pytest.fixture
def cvmfs(tmp_path: Path) -> Iterator[Path]:
    """A folder that is a shared mount point, as the automounter makes /cvmfs; everything
    mounted under it is unmounted afterwards."""
    folder = tmp_path / "cvmfs"
    folder.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "--recursive", str(folder)], check=True)


def mount_repository(cvmfs: Path, release: str) -> None:
    """Mount the repository under /cvmfs, as the automounter does on first access, holding
    one file that names its release."""
    repository = cvmfs / REPOSITORY
    repository.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(repository)], check=True)
    (repository / "release").write_text(release, encoding="ascii")


def release_seen(api: docker.APIClient, pilot: str, where: str) -> str:
    """Return the release a pilot reads in the repository under ``where`` ("" for none)."""
    code, output = services.in_pilot(api, pilot, "cat", f"{where}/{REPOSITORY}/release")
    return output if code == 0 else ""


@BOTH_ENGINES
def test_a_repository_mounted_after_the_pilots_started_reaches_them_through_a_slave_bind(
    cvmfs: Path, installation: Installation, engine_api: docker.APIClient
) -> None:
    installation.write_config(
        STEADY_POLICY
        + f"""max_docks: 1
docker_cmd: ["sleep", "600"]
binds: ["{cvmfs}:/cvmfs:rslave", "{cvmfs}:/cvmfs-private"]
"""
    )
    assert installation.ctl("start").returncode == 0
    found = wait_until(lambda: services.instance_containers(engine_api, installation.instance, running_only=True))
    assert isinstance(found, list)
    pilot = found[0]["Id"]
    assert release_seen(engine_api, pilot, "/cvmfs") == ""

    mount_repository(cvmfs, "release 1")
    assert release_seen(engine_api, pilot, "/cvmfs") == "release 1"
    # without slave propagation the pilot keeps the folder it had at its start: empty
    assert release_seen(engine_api, pilot, "/cvmfs-private") == ""

    # the automounter lets the repository go and mounts it again, with a new release
    subprocess.run(["umount", str(cvmfs / REPOSITORY)], check=True)
    assert release_seen(engine_api, pilot, "/cvmfs") == ""
    mount_repository(cvmfs, "release 2")
    assert release_seen(engine_api, pilot, "/cvmfs") == "release 2"
    # the same pilot, never restarted
    running = services.instance_containers(engine_api, installation.instance, running_only=True)
    assert [entry["Id"] for entry in running] == [pilot]
