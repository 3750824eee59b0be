"""Faults the daemon must ride out: being killed mid-loop, a full log disk, clock jumps, and
a second instance on the same host."""

import os
import signal
import subprocess
from collections.abc import Iterator

import docker
import pytest

from tests.conftest import STEADY_POLICY, Engine, Installation, wait_until
from tests.support import services

pytestmark = pytest.mark.docker


def test_sigkill_mid_loop_leaves_no_duplicate_or_orphan(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 3\ndocks_per_loop: 3\ndocker_cmd: sleep 300\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: len(services.running_ids(docker_api, installation.instance)) == 3, what="three pilots")
    before = services.running_ids(docker_api, installation.instance)
    for _ in range(3):
        pid = installation.status()["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: installation.ctl("status").returncode == 3, what="the daemon gone")
        assert installation.ctl("start").returncode == 0
        wait_until(lambda: installation.state().loops >= 3, what="three loops after the restart")
        assert services.running_ids(docker_api, installation.instance) == before
        assert len(services.instance_containers(docker_api, installation.instance)) == 3

    assert installation.ctl("force-stop").returncode == 0
    os.kill(installation.status()["pid"], signal.SIGKILL)
    assert installation.ctl("start").returncode == 0
    assert installation.status()["mode"] == "force-stop"
    wait_until(
        lambda: not services.instance_containers(docker_api, installation.instance), what="force-stop after the restart"
    )


@pytest.fixture
def full_log_disk(installation: Installation) -> Iterator[str]:
    """A 256 KiB file system mounted on the log folder."""
    os.makedirs(installation.logdir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", installation.logdir], check=True)
    yield installation.logdir
    subprocess.run(["umount", "-l", installation.logdir], check=False)


def test_a_full_log_disk_does_not_stop_the_daemon(
    installation: Installation, docker_api: docker.APIClient, full_log_disk: str
) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 1\ndocker_cmd: sleep 300\n")
    filler = os.path.join(full_log_disk, "filler")
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, check=False)
    assert installation.ctl("start").returncode == 0
    first = wait_until(lambda: services.running_ids(docker_api, installation.instance), what="a pilot")
    assert isinstance(first, set)
    docker_api.kill(next(iter(first)))
    # the pilot is replaced although nothing can be logged, and status says where writing failed
    wait_until(lambda: services.running_ids(docker_api, installation.instance) - first, what="a replacement pilot")
    status = wait_until(lambda: (result := installation.ctl("status")).stdout.count("log: cannot write") and result)
    assert isinstance(status, subprocess.CompletedProcess)
    assert "plancton.log" in status.stdout and "No space left" in status.stdout
    os.unlink(filler)
    for container in services.running_ids(docker_api, installation.instance):
        docker_api.kill(container)  # something to log
    wait_until(lambda: "log: cannot write" not in installation.ctl("status").stdout, what="the log writable again")


@pytest.fixture
def second(tmp_path_factory: pytest.TempPathFactory, docker_engine: Engine) -> Iterator[Installation]:
    setup = Installation(root=str(tmp_path_factory.mktemp("second")), instance="tsecond")
    yield setup
    setup.ctl("stop", "--timeout", "20")
    services.remove_instance(setup.instance)


def test_two_instances_share_a_host(
    installation: Installation, second: Installation, docker_api: docker.APIClient
) -> None:
    installation.write_config(
        STEADY_POLICY + "max_docks: 2\ndocks_per_loop: 2\ndocker_cmd: sleep 300\nvacate_time: 1\n"
    )
    second.write_config(STEADY_POLICY + "max_docks: 3\ndocks_per_loop: 3\ndocker_cmd: sleep 300\nvacate_time: 1\n")
    assert installation.ctl("start").returncode == 0
    assert second.ctl("start").returncode == 0
    wait_until(
        lambda: len(services.running_ids(docker_api, installation.instance)) == 2, what="the first instance's pool"
    )
    wait_until(lambda: len(services.running_ids(docker_api, second.instance)) == 3, what="the second instance's pool")
    others = services.running_ids(docker_api, second.instance)
    assert installation.ctl("force-stop").returncode == 0
    wait_until(
        lambda: not services.instance_containers(docker_api, installation.instance), what="the first pool stopped"
    )
    assert installation.ctl("stop").returncode == 0
    assert services.running_ids(docker_api, second.instance) == others
    assert len(second.status()["pilots"]) == 3
