"""The Docker Engine failing under the daemon: killed during a spawn burst, its socket closed
to the daemon's user, its image removed. These tests stop the shared engine, so they run last."""

import os
import pwd
import subprocess
from collections.abc import Iterator

import docker
import pytest

from tests import services
from tests.conftest import STEADY_POLICY, Engine, Installation, make_user, wait_until
from tests.test_user_mode import as_user

pytestmark = [pytest.mark.docker, pytest.mark.disruptive]
FAULT_IMAGE = "plancton-fault:1"


def containers(instance: str) -> list[dict[str, str]]:
    """Return this instance's containers, with a fresh client (the engine may have restarted)."""
    with services.engine_client(30) as client:
        return services.instance_containers(client, instance)


def states(instance: str) -> list[str]:
    return sorted(entry["State"] for entry in containers(instance))


def test_engine_killed_during_a_spawn_burst(installation: Installation, docker_engine: Engine) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 6\ndocks_per_loop: 6\ndocker_cmd: sleep 300\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: "started pilot" in installation.log(), what="the burst to begin")
    docker_engine.kill()
    wait_until(lambda: installation.status()["engine_error"], what="the daemon to notice the engine is gone")
    assert installation.ctl("status").returncode == 0  # still running
    docker_engine.ensure()
    wait_until(lambda: states(installation.instance) == ["running"] * 6, timeout=120, what="a full pool again")
    assert "container engine is back" in installation.log()
    assert installation.status()["engine_error"] is None


@pytest.fixture
def docker_user(docker_engine: Engine) -> Iterator[pwd.struct_passwd]:
    user = make_user("plancton-socket", ["docker"])
    yield user
    os.chmod(services.DOCKER_SOCKET, 0o660)
    as_user(user, "stop", "--timeout", "20")
    services.remove_instance("socketfault")
    subprocess.run(["userdel", "-r", user.pw_name], capture_output=True, check=False)


def test_socket_permissions_changed_under_the_daemon(docker_user: pwd.struct_passwd) -> None:
    confdir = os.path.join(docker_user.pw_dir, ".plancton", "conf")
    os.makedirs(confdir)
    with open(os.path.join(confdir, "config.yaml"), "w", encoding="utf-8") as handle:
        handle.write(f"instance: socketfault\n{STEADY_POLICY}max_docks: 1\ndocker_cmd: sleep 300\n")
    subprocess.run(
        ["chown", "-R", f"{docker_user.pw_name}:", os.path.join(docker_user.pw_dir, ".plancton")], check=True
    )
    assert as_user(docker_user, "start").returncode == 0
    wait_until(lambda: states("socketfault") == ["running"], what="the user's pilot")
    first = containers("socketfault")[0]["Id"]
    os.chmod(services.DOCKER_SOCKET, 0o600)
    with services.engine_client() as client:
        client.kill(first)  # the daemon must act while its user is shut out
    # a connection made before keeps working; a new one is denied and said so: either way the
    # daemon runs on
    wait_until(
        lambda: (
            "permission denied" in as_user(docker_user, "status").stdout
            or [c for c in containers("socketfault") if c["Id"] != first and c["State"] == "running"]
        ),
        what="a replacement or the denial in status",
    )
    assert as_user(docker_user, "status").returncode == 0
    os.chmod(services.DOCKER_SOCKET, 0o660)
    wait_until(lambda: "container engine unavailable" not in as_user(docker_user, "status").stdout, what="recovery")
    wait_until(lambda: states("socketfault") == ["running"], what="one running pilot")
    assert as_user(docker_user, "status").returncode == 0


@pytest.fixture
def fault_image(docker_engine: Engine) -> Iterator[str]:
    services.ensure_busybox_image(FAULT_IMAGE)
    yield FAULT_IMAGE
    client = docker.APIClient(version="auto")
    try:
        client.remove_image(FAULT_IMAGE, force=True)
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()


def test_image_removed_while_pilots_run(installation: Installation, fault_image: str) -> None:
    installation.write_config(STEADY_POLICY + f"max_docks: 2\ndocker_image: {fault_image}\ndocker_cmd: sleep 300\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: states(installation.instance) == ["running", "running"], what="two pilots")
    client = docker.APIClient(version="auto")
    try:
        untagged = client.inspect_image(fault_image)["Id"]
        client.remove_image(fault_image, force=True)
        # running pilots are left alone; a replacement cannot start without the image
        client.kill(containers(installation.instance)[0]["Id"])
    finally:
        client.close()
    wait_until(lambda: f"image {fault_image} is not available" in installation.log(), what="the missing image")
    assert states(installation.instance) == ["running"]
    assert installation.ctl("status").returncode == 0
    services.ensure_busybox_image(fault_image)
    wait_until(lambda: states(installation.instance) == ["running", "running"], what="the pool refilled")
    # the image the test untagged stays, nameless, until its last pilot is gone
    installation.ctl("stop")
    services.remove_instance(installation.instance)
    with services.engine_client() as client:
        client.remove_image(untagged, force=True)
