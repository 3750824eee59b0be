"""Real services for the tests and benchmarks: a Docker Engine and a local busybox image.

No registry is reachable on the test machines, so ``busybox:latest`` is made with
``docker import`` from a folder holding the host's static busybox and its applet links.
"""

import io
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import docker

from plancton.engines.spec import instance_label

DOCKER_SOCKET = "/var/run/docker.sock"
BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "true", "false", "ls", "yes", "kill", "mkdir", "env", "dd", "timeout")
START_TIMEOUT_SECONDS = 90.0

T = TypeVar("T")


class WaitTimeout(Exception):
    """What :func:`poll` waited for did not happen in time."""


def poll(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something true; return it.

    The bound only keeps a broken run from hanging; it measures nothing.

    Raises:
        WaitTimeout: it did not within ``timeout`` seconds (the message names ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class StartedProcess:
    """A service process the tests started, to be stopped by its pid."""

    process: subprocess.Popen[bytes]
    log_path: str

    def log_text(self) -> str:
        """Return what the service has logged so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the service with SIGTERM, SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def docker_answers() -> bool:
    """Return whether a Docker Engine answers on the local socket."""
    try:
        client = docker.DockerClient(base_url=f"unix://{DOCKER_SOCKET}", timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False


def wait_for_docker(timeout: float = START_TIMEOUT_SECONDS, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until the engine answers; raise RuntimeError when it does not in time or died."""

    def answers() -> bool:
        if docker_answers():
            return True
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"dockerd exited with code {process.returncode}")
        return False

    try:
        poll(answers, timeout, "the Docker Engine")
    except WaitTimeout:
        raise RuntimeError(f"the Docker Engine did not answer within {timeout:.0f} s") from None


def start_dockerd(log_dir: str) -> StartedProcess:
    """Start dockerd in the background (root only), wait until it answers, and return it."""
    log_path = os.path.join(log_dir, "dockerd.log")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started = StartedProcess(process, log_path)
    try:
        wait_for_docker(process=process)
    except RuntimeError as error:
        started.stop()
        raise RuntimeError(f"{error}; dockerd log:\n{started.log_text()[-4000:]}") from None
    return started


@contextmanager
def engine_client(timeout: float = 60.0) -> Iterator[docker.APIClient]:
    """A client of its own for the local engine, closed afterwards (use it where the engine may
    have restarted since another client connected)."""
    client = docker.APIClient(base_url=f"unix://{DOCKER_SOCKET}", version="auto", timeout=timeout)
    try:
        yield client
    finally:
        client.close()


def instance_containers(api: docker.APIClient, instance: str, running_only: bool = False) -> list[dict[str, Any]]:
    """Return the containers that carry a Plancton instance's label (the running ones only, or all)."""
    return list(api.containers(all=not running_only, filters={"label": [instance_label(instance)]}))


def running_ids(api: docker.APIClient, instance: str) -> set[str]:
    """Return the ids of a Plancton instance's running containers."""
    return {entry["Id"] for entry in instance_containers(api, instance, running_only=True)}


def remove_instance_containers(instance: str) -> None:
    """Remove every container labelled for a Plancton instance, with their volumes."""
    with engine_client() as client:
        for entry in instance_containers(client, instance):
            client.remove_container(entry["Id"], force=True, v=True)


def ensure_busybox_image(reference: str = "busybox:latest") -> None:
    """Create ``busybox:latest`` with docker import from the host's static busybox if missing."""
    client = docker.APIClient(base_url=f"unix://{DOCKER_SOCKET}", timeout=120)
    try:
        try:
            client.inspect_image(reference)
            return
        except docker.errors.ImageNotFound:
            pass
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            _add_folder(tar, "bin", 0o755)
            _add_folder(tar, "tmp", 0o1777)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in BUSYBOX_APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        repository, _, tag = reference.partition(":")
        client.import_image_from_data(archive.getvalue(), repository=repository, tag=tag or "latest")
    finally:
        client.close()


def _add_folder(tar: tarfile.TarFile, name: str, mode: int) -> None:
    folder = tarfile.TarInfo(name)
    folder.type, folder.mode = tarfile.DIRTYPE, mode
    tar.addfile(folder)
