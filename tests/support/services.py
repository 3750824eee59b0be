"""Real services for the tests and benchmarks: a Docker Engine, Podman's API service, and a
local busybox image in each.

No registry is reachable on the test machines, so ``busybox:latest`` is made with
``docker import`` from a folder holding the host's static busybox and its applet links.
"""

import contextlib
import io
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import docker

from plancton.engines.docker_api import DockerPilots
from plancton.engines.spec import LABEL_SPARE, instance_label
from plancton.platform.cgroups import CGROUP_ROOT, PilotCgroup

DOCKER_SOCKET = "/var/run/docker.sock"
#: Where rootful Podman's API service listens (the path of Debian's podman.socket unit).
PODMAN_SOCKET = "/run/podman/podman.sock"
PODMAN_URL = f"unix://{PODMAN_SOCKET}"
BUSYBOX = "/bin/busybox"
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "true", "false", "ls", "yes", "kill", "mkdir", "env", "dd", "timeout")
START_TIMEOUT_SECONDS = 90.0
#: planctonctl through the interpreter running this code (the test environment's), not PATH.
PLANCTONCTL = (sys.executable, "-m", "plancton.cli.planctonctl")
#: The instance names the tests give (see the ``instance`` fixture).
TEST_INSTANCE = re.compile(r"t[0-9a-f]{8}")

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


def docker_answers(url: str = f"unix://{DOCKER_SOCKET}") -> bool:
    """Return whether an engine answers the Docker API at ``url`` (by default the Docker socket)."""
    try:
        client = docker.DockerClient(base_url=url, timeout=5)
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


def podman_runtime_options(cgroup_root: str = "/sys/fs/cgroup") -> list[str]:
    """Return the podman options that pick an OCI runtime this host can run containers with.

    Podman's own choice, crun, refuses a hybrid cgroup host whose unified hierarchy holds a
    controller ("cgroups in hybrid mode not supported"), as on a host where no v1 hierarchy
    mounts hugetlb; runc runs there. Elsewhere Podman keeps its choice."""
    try:
        with open(os.path.join(cgroup_root, "unified", "cgroup.controllers"), encoding="ascii") as handle:
            hybrid_with_controllers = bool(handle.read().split())
    except OSError:
        return []
    return ["--runtime", "runc"] if hybrid_with_controllers and shutil.which("runc") else []


def start_podman_service(log_dir: str) -> StartedProcess:
    """Start rootful Podman's API service on :data:`PODMAN_SOCKET` (root only; ``--time=0``, or
    it exits 5 s after its last client), wait until it answers, and return it."""
    os.makedirs(os.path.dirname(PODMAN_SOCKET), exist_ok=True)
    log_path = os.path.join(log_dir, "podman.log")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            ["podman", *podman_runtime_options(), "system", "service", "--time=0", PODMAN_URL],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = StartedProcess(process, log_path)

    def answers() -> bool:
        if process.poll() is not None:
            raise WaitTimeout(f"podman system service exited with code {process.returncode}")
        return docker_answers(PODMAN_URL)

    try:
        poll(answers, START_TIMEOUT_SECONDS, "Podman's API service")
    except WaitTimeout as error:
        started.stop()
        raise RuntimeError(f"{error}; its log:\n{started.log_text()[-4000:]}") from None
    return started


def remove_image(reference: str) -> None:
    """Remove an image from the Docker Engine (one a test or benchmark built); a missing one is fine."""
    with engine_client() as client, contextlib.suppress(docker.errors.NotFound):
        client.remove_image(reference, force=True)


def copy_image(reference: str, url: str) -> bool:
    """Copy an image of the Docker Engine into the engine at ``url`` unless it has it; return
    whether it was copied (so that its copier removes it afterwards)."""
    with engine_client(url=url, timeout=120) as target:
        try:
            target.inspect_image(reference)
            return False
        except docker.errors.ImageNotFound:
            pass
        with engine_client(timeout=120) as source:
            archive = b"".join(source.get_image(reference))
        for _ in target.load_image(archive):
            pass
    return True


@contextmanager
def engine_client(timeout: float = 60.0, url: str = f"unix://{DOCKER_SOCKET}") -> Iterator[docker.APIClient]:
    """A client of its own for an engine (by default the Docker Engine), closed afterwards (use
    it where the engine may have restarted since another client connected)."""
    client = docker.APIClient(base_url=url, version="auto", timeout=timeout)
    try:
        yield client
    finally:
        client.close()


def in_pilot(api: docker.APIClient, container: str, *command: str) -> tuple[int, str]:
    """Run a command in a pilot, as its own user; return its exit code and output."""
    execution = api.exec_create(container, list(command))
    output = api.exec_start(execution["Id"]).decode()
    return api.exec_inspect(execution["Id"])["ExitCode"], output.strip()


def instance_containers(
    api: docker.APIClient, instance: str, running_only: bool = False, spares: bool = False
) -> list[dict[str, Any]]:
    """Return the pilots of a Plancton instance: the containers that carry its label (the running
    ones only, or all), and with ``spares`` its spare too (created ahead of need, not started)."""
    entries = api.containers(all=not running_only, filters={"label": [instance_label(instance)]})
    return [entry for entry in entries if spares or not is_waiting_spare(entry)]


def is_waiting_spare(entry: dict[str, Any]) -> bool:
    """Return whether a container of a listing is a spare pilot that has not started."""
    return (entry.get("Labels") or {}).get(LABEL_SPARE) == "true" and entry.get("State") == "created"


def spare_ids(api: docker.APIClient, instance: str) -> set[str]:
    """Return the ids of a Plancton instance's spares that wait (created, not started)."""
    entries = instance_containers(api, instance, spares=True)
    return {entry["Id"] for entry in entries if is_waiting_spare(entry)}


def running_ids(api: docker.APIClient, instance: str) -> set[str]:
    """Return the ids of a Plancton instance's running containers."""
    return {entry["Id"] for entry in instance_containers(api, instance, running_only=True)}


def pilot_output(instance: str, url: str, lines: int = 40) -> str:
    """Return the last lines each of an instance's containers wrote, for a failure's report."""
    parts = []
    try:
        with engine_client(url=url) as client:
            for entry in instance_containers(client, instance):
                output = client.logs(entry["Id"], tail=lines).decode("utf-8", errors="replace")
                parts.append(f"--- {entry['Names'][0].lstrip('/')} ({entry['State']}):\n{output}")
    except docker.errors.DockerException as error:
        parts.append(f"(the engine gave no pilot output: {error})")
    return "\n".join(parts) or "(no pilot left)"


def remove_instance(instance: str, url: str = f"unix://{DOCKER_SOCKET}") -> None:
    """Remove what a Plancton instance left on the host: every container labelled for it in the
    engine at ``url``, with their volumes, and then the pilots' parent cgroup."""
    with engine_client(url=url) as client:
        for entry in instance_containers(client, instance, spares=True):
            client.remove_container(entry["Id"], force=True, v=True)
    cgroup = pilot_cgroup(instance, url)
    # the runtime removes a removed container's own cgroup a moment later; until then the
    # parent is not empty
    remove_cgroups_once_empty([cgroup], 60)


def pilot_cgroup(instance: str, url: str = f"unix://{DOCKER_SOCKET}") -> PilotCgroup:
    """Return an instance's parent cgroup as its daemon finds it: from what the engine at
    ``url`` says of itself (its cgroup driver and version, the user it runs as), so that a
    test holds on cgroup v1 or v2, with the cgroupfs or the systemd driver."""
    info = DockerPilots(instance, url).engine_info()
    return PilotCgroup(instance, info.cgroup_driver, info.cgroup_version, CGROUP_ROOT, info.server_uid)


def remove_cgroups_once_empty(cgroups: list[PilotCgroup], seconds: float) -> None:
    """Remove instances' parent cgroups as soon as they are empty, waiting up to ``seconds``;
    what is still there then is left for the session's check to report."""

    def gone() -> bool:
        for cgroup in cgroups:
            if cgroup.driver == "systemd":
                stop_slices(cgroup.instance)
            else:
                cgroup.remove()
        return not any(instance_cgroups(cgroup.instance) for cgroup in cgroups)

    with contextlib.suppress(WaitTimeout):
        poll(gone, seconds, "the instances' cgroups to go")


def end_orphaned_pilots(before: "HostSnapshot", seconds: float = 30.0) -> None:
    """End what is left in the test instances' parent cgroups made since ``before``, and remove
    those cgroups. Pilots whose engine a fault test killed live on out of any engine's reach
    (their shim gone, their command still running): the suite ends them, as it started them.
    Only cgroups named as the tests name instances are looked at."""
    version = cgroup_version()
    names = {name.rpartition("/")[2] for name in HostSnapshot.take().cgroups - before.cgroups}
    cgroups = [PilotCgroup(name, "cgroupfs", version) for name in names if TEST_INSTANCE.fullmatch(name)]
    for cgroup in cgroups:
        kill_instance_processes(cgroup.instance)
    remove_cgroups_once_empty(cgroups, seconds)


def kill_instance_processes(instance: str) -> None:
    """SIGKILL every process left in an instance's parent cgroups (pilots whose engine is gone)."""
    for folder in instance_cgroups(instance):
        for pid in cgroup_pids(os.path.join(CGROUP_ROOT, folder)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop_slices(instance: str) -> None:
    """Stop the slice that the engine's systemd driver made for an instance's pilots once no
    process runs in it (systemd keeps a slice that a scope was started in until it is stopped)."""
    for folder in instance_cgroups(instance):
        name = folder.rpartition("/")[2]
        if name.endswith(".slice") and not cgroup_pids(os.path.join(CGROUP_ROOT, folder)):
            subprocess.run(["systemctl", "stop", name], check=False, capture_output=True)


def cgroup_pids(folder: str) -> list[int]:
    """Return the processes in a cgroup folder and every cgroup below it."""
    pids = []
    for below, _, files in os.walk(folder):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError), open(os.path.join(below, "cgroup.procs"), encoding="ascii") as handle:
                pids += [int(pid) for pid in handle.read().split()]
    return pids


def instance_cgroups(instance: str) -> list[str]:
    """Return the pilots' parent cgroups of an instance still on the host."""
    return sorted(name for name in cgroup_names() if name.rpartition("/")[2] in (instance, f"{instance}.slice"))


def remove_engine_parent(name: str, before: set[str]) -> None:
    """Remove the empty parent cgroup an engine makes for the containers started without one
    (Docker's "docker", Podman's "libpod_parent"), unless the host had it before ``before``."""
    if not any(entry.rpartition("/")[2] == name for entry in before):
        PilotCgroup(name, "cgroupfs", cgroup_version()).remove()


def cgroup_version() -> int:
    """Return the host's cgroup version, 1 or 2."""
    return 2 if os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers")) else 1


def cgroup_names(root: str = CGROUP_ROOT) -> set[str]:
    """Return the cgroups one and two levels down ("cpu/t1a2b" on cgroup v1, "t1a2b" on v2),
    where the pilots' parents go."""
    names = set()
    for top in os.scandir(root):
        if top.is_dir(follow_symlinks=False):
            names.add(top.name)
            names.update(f"{top.name}/{entry.name}" for entry in os.scandir(top.path) if entry.is_dir())
    return names


@dataclass(frozen=True)
class HostSnapshot:
    """What the test suite could leave behind on the host."""

    cgroups: frozenset[str]
    containers: frozenset[str]
    images: frozenset[str]
    users: frozenset[str]

    @classmethod
    def take(cls) -> "HostSnapshot":
        """Look at the host now (containers and images only while an engine answers)."""
        containers: set[str] = set()
        images: set[str] = set()
        if docker_answers():
            with engine_client() as client:
                containers = {entry["Id"][:12] for entry in client.containers(all=True)}
                images = {tag for entry in client.images() for tag in entry.get("RepoTags") or [entry["Id"]]}
        return cls(
            frozenset(cgroup_names()),
            frozenset(containers),
            frozenset(images),
            frozenset(u.pw_name for u in pwd.getpwall()),
        )

    def left_since(self, before: "HostSnapshot", engine: bool = True) -> list[str]:
        """Return what is here now that was not at ``before``, one line per kind (the engine's
        containers and images only if ``engine``)."""
        lines = []
        for kind in ("cgroups", "users", *(("containers", "images") if engine else ())):
            new = sorted(getattr(self, kind) - getattr(before, kind))
            if new:
                lines.append(f"{kind} left behind: {', '.join(new[:20])}")
        return lines


def ensure_busybox_image(reference: str = "busybox:latest") -> bool:
    """Create ``busybox:latest`` with docker import from the host's static busybox if missing;
    return whether it was created here (so that its creator removes it afterwards)."""
    client = docker.APIClient(base_url=f"unix://{DOCKER_SOCKET}", timeout=120)
    try:
        try:
            client.inspect_image(reference)
            return False
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
        return True
    finally:
        client.close()


def _add_folder(tar: tarfile.TarFile, name: str, mode: int) -> None:
    folder = tarfile.TarInfo(name)
    folder.type, folder.mode = tarfile.DIRTYPE, mode
    tar.addfile(folder)
