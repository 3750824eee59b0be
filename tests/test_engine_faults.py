"""The Docker Engine failing under the daemon: killed during a spawn burst, its socket closed
to the daemon's user, its image removed. These tests stop the shared engine, so they run last."""

import os
import pwd
import subprocess
from collections.abc import Iterator

import docker
import pytest

from tests.conftest import STEADY_POLICY, Engine, Installation, make_user, wait_until
from tests.support import services
from tests.test_user_mode import as_user

pytestmark = [pytest.mark.docker, pytest.mark.disruptive]
FAULT_IMAGE = "plancton-fault:1"


def containers(instance: str) -> list[dict[str, str]]:
    """Return this instance's containers, with a fresh client (the engine may have restarted)."""
    with services.engine_client(30) as client:
        return services.instance_containers(client, instance)


def states(instance: str, client: docker.APIClient | None = None) -> list[str]:
    """Return the states of this instance's containers (on the Docker Engine, or through a client)."""
    entries = containers(instance) if client is None else services.instance_containers(client, instance)
    return sorted(entry["State"] for entry in entries)


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
    try:
        wait_until(lambda: f"image {fault_image} is not available" in installation.log(), what="the missing image")
        # the killed pilot is removed; no other takes its place
        wait_until(lambda: states(installation.instance) == ["running"], what="the killed pilot removed")
        assert installation.ctl("status").returncode == 0
        services.ensure_busybox_image(fault_image)
        wait_until(lambda: states(installation.instance) == ["running", "running"], what="the pool refilled")
    finally:
        # the image the test untagged stays, nameless, until its last pilot is gone
        installation.ctl("stop")
        services.remove_instance(installation.instance)
        with services.engine_client() as client:
            client.remove_image(untagged, force=True)


class PodmanService:
    """A Podman API service of the test's own, on a socket of its own over the same storage
    as the shared one (which is never stopped), started and killed by its pid."""

    def __init__(self, folder: str) -> None:
        self.url = f"unix://{folder}/podman.sock"
        self.log_path = os.path.join(folder, "podman.log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["podman", *services.podman_runtime_options(), "system", "service", "--time=0", self.url],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: services.docker_answers(self.url), what="the test's Podman API service")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def own_podman_service(podman_engine: str, tmp_path: "os.PathLike[str]") -> Iterator[PodmanService]:
    """Podman's API service for one test (the shared one provides the busybox image)."""
    service = PodmanService(str(tmp_path))
    service.start()
    yield service
    service.kill()


@pytest.mark.parametrize("engine_name", ["podman"])
def test_podman_api_service_restarted_under_the_daemon(
    installation: Installation, own_podman_service: PodmanService, engine_api: docker.APIClient
) -> None:
    """Podman's API service (not the engine of the containers: conmon keeps them) killed and
    started again: the daemon notices, retries, and finds its pilots again, starting none twice."""
    installation.engine_url = own_podman_service.url
    installation.write_config(STEADY_POLICY + "max_docks: 3\ndocks_per_loop: 3\ndocker_cmd: sleep 300\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: states(installation.instance, engine_api) == ["running"] * 3, timeout=120, what="3 pilots")
    before = {entry["Id"] for entry in services.instance_containers(engine_api, installation.instance)}
    own_podman_service.kill()
    wait_until(lambda: installation.status()["engine_error"], what="the daemon to notice the service is gone")
    assert installation.ctl("status").returncode == 0  # still running
    assert states(installation.instance, engine_api) == ["running"] * 3  # the pilots run on without it
    own_podman_service.start()
    wait_until(lambda: installation.status()["engine_error"] is None, timeout=120, what="the daemon to reconnect")
    assert "container engine is back" in installation.log()
    assert {entry["Id"] for entry in services.instance_containers(engine_api, installation.instance)} == before
