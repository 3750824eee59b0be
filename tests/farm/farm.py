"""A farm on one machine: a hub network namespace holding the farm network's bridge and the
farm's services (a Docker Engine for them, HTCondor's central manager with a schedd, a git
daemon serving the site's configuration repository, Prometheus scraping every node, and, for
the test that asks for one, a Work Queue manager), and nodes (:class:`tests.farm.node.Node`)
that take their configuration from that repository and feed their pilots to that pool.

Everything made is written down in a ledger first (:mod:`tests.farm.ledger`), so that
:meth:`Farm.stop`, or a later sweep of the ledger, removes it whatever happened meanwhile.
"""

import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from unittest import mock

import docker
import yaml

from tests.farm.layout import BRIDGE, GIT_PORT, FarmLayout
from tests.farm.ledger import Ledger, sweep
from tests.farm.node import Node, NodeEngine, create_namespace, in_namespace, run_checked, spawn, tail
from tests.farm.support import htcondor_pool, services, wait_until, workqueue_manager
from tests.farm.watch import METRICS_PORT, FarmPrometheus

#: The pilot image in every engine of the farm (the HTCondor example's, built by its script).
PILOT_IMAGE = "plancton-htcondor:latest"
#: The Work Queue example's self-contained pilot image (worker and libraries inside, no bind
#: from the host), in every node's engine too.
WORKQUEUE_IMAGE = "plancton-workqueue:latest"
BUSYBOX_IMAGE = "busybox:latest"
#: The site's policy on every node: the CPU of this one machine is shared by every node, so
#: the owner is never the CPU (its load would be every other node's pilots); the owner is the
#: person at each node's keyboard, as logind tells it. A returning owner's pilots are paused at
#: once and stopped after grace_kill; a pilot's stop evicts its job within vacate_time.
SITE_POLICY: dict[str, Any] = {
    "owner_busy_percent": 100,
    "owner_idle_percent": 99,
    "cpu_pressure_percent": 100,
    "pause_delay": "1h",
    "input_idle": 60,
    "run_on_battery": True,
    "grace_kill": 10,
    "grace_spawn": 5,
    "vacate_time": 10,
    "main_sleep": 2,
    "max_docks": 2,
    "metrics_listen": "0.0.0.0:9810",
}
#: Seconds a Work Queue pilot's worker waits for a task, or for its manager, before it exits:
#: once the manager is done, the pilots leave and the site's usual pilots come back.
WORKER_IDLE_SECONDS = 30
#: Seconds an unclaimed pilot waits for a job before it exits and is replaced.
PILOT_IDLE_SECONDS = 120
#: What a node's log says when its daemon starts a pilot, with the pilot's name.
STARTED_PILOT = re.compile(r"started pilot (\S+) ")
#: What a node's update says when it took a commit, with the commit's first 12 digits.
UPDATED_TO = re.compile(r"updated to commit ([0-9a-f]{12})")
#: Seconds between two rounds of :class:`UpdateRounds`: a timer far quicker than a site's.
ROUND_SECONDS = 2.0
#: The key that any dockerd makes when the host has none (no flag of dockerd 20.10 moves it).
DOCKERD_KEY = "/etc/docker/key.json"
T = TypeVar("T")
SITE_EMAIL = "site@farm.invalid"
GIT_IDENTITY = ["-c", "user.name=Farm site", "-c", f"user.email={SITE_EMAIL}"]


def site_config(layout: FarmLayout, token_folder: str, **overrides: Any) -> str:
    """Given a farm and the folder of its pool's token, return the site's config.yaml: the
    HTCondor example's configuration pointed at the farm's pool, with :data:`SITE_POLICY` and
    the given keys. No node's engine or address is in it: each node's environment says those.
    """
    with open(os.path.join(htcondor_pool.EXAMPLE, "config.yaml"), encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    config["instance"] = layout.instance
    config["docker_image"] = PILOT_IMAGE
    config["environment"]["_condor_CONDOR_HOST"] = layout.hub_address
    config["environment"]["_condor_STARTD_NOCLAIM_SHUTDOWN"] = str(PILOT_IDLE_SECONDS)
    config["binds"] = [f"{token_folder}:{htcondor_pool.TOKEN_DIRECTORY}"]
    config.update(SITE_POLICY)
    config.update(overrides)
    return str(yaml.safe_dump(config, sort_keys=False))


def workqueue_pilots(layout: FarmLayout, port: int) -> dict[str, Any]:
    """Given a farm and the port of a Work Queue manager in its hub, return the keys of the
    site's configuration that make its pilots the Work Queue example's: the example's worker
    command pointed at that manager and its user, the self-contained image (no bind, none of
    HTCondor's environment). Pilots stay on each node engine's bridge, where each has a host
    name of its own, which its worker reports to the manager. The pilots of the previous image
    stop at once (``replace_on_image_change``), as when a site moves its nodes to another pool.
    """
    with open(os.path.join(workqueue_manager.EXAMPLE, "config.yaml"), encoding="utf-8") as handle:
        example = yaml.safe_load(handle)
    command = workqueue_manager.worker_command(
        example["docker_cmd"], port, WORKER_IDLE_SECONDS, host=layout.hub_address
    )
    return {
        "docker_image": WORKQUEUE_IMAGE,
        "docker_cmd": command,
        "user_group": example["user_group"],
        "environment": {},
        "binds": [],
        "replace_on_image_change": True,
    }


class FarmPool(htcondor_pool.Pool):
    """The farm's HTCondor central manager with its schedd: the example's image in the hub's
    engine, on the hub's network (the farm network), so that every node's pilots reach it at
    the hub's address."""

    @classmethod
    def start_in_hub(cls, engine: NodeEngine, address: str, folder: str) -> "FarmPool":
        """Start the manager in the hub's engine, its files in ``folder``; return it once its
        schedd answers and its token for the pilots is written.

        Raises:
            services.WaitTimeout: the manager did not answer in time.
        """
        client = docker.APIClient(base_url=engine.url, version="auto", timeout=120)
        submit = os.path.join(folder, "submit")
        os.makedirs(submit)
        os.chown(submit, htcondor_pool.SUBMITTER_UID, htcondor_pool.SUBMITTER_UID)
        home = f"/home/{htcondor_pool.SUBMITTER}"
        container = client.create_container(
            PILOT_IMAGE,
            name="htcondor-manager",
            # only the farm network's address: not the hub's loopback
            environment={**htcondor_pool.MANAGER_ENVIRONMENT, "_condor_NETWORK_INTERFACE": address},
            host_config=client.create_host_config(binds=[f"{submit}:{home}:rw"], network_mode="host"),
        )
        pool = cls(client, "farm", "host", container["Id"], address, folder)
        try:
            client.start(pool.manager)
            uid = str(htcondor_pool.SUBMITTER_UID)
            pool.run("useradd", "--uid", uid, "--no-create-home", "--home-dir", home, htcondor_pool.SUBMITTER)
            services.poll(pool.answers, htcondor_pool.START_TIMEOUT_SECONDS, "the farm's HTCondor schedd to answer")
            pool.write_token()
        except BaseException:
            pool.stop()
            raise
        return pool

    def stop(self) -> None:
        """Remove the manager (the hub's network is the hub's, not the pool's)."""
        try:
            self.client.remove_container(self.manager, force=True, v=True)
        except docker.errors.DockerException:
            pass
        finally:
            self.client.close()


@dataclass
class ConfigRepository:
    """The site's configuration repository: a bare repository that the hub's git daemon
    serves, and a working copy in which the site commits, signing each commit with its ssh
    key, which the allowed-signers file that every node trusts lists."""

    folder: str

    @property
    def bare(self) -> str:
        return os.path.join(self.folder, "config.git")

    @property
    def work(self) -> str:
        return os.path.join(self.folder, "work")

    @property
    def signing_key(self) -> str:
        """The site's private ssh key, which signs its commits."""
        return os.path.join(self.folder, "signing-key")

    @property
    def allowed_signers(self) -> str:
        """The allowed-signers file (git's format) that lists the site's key, for the nodes."""
        return os.path.join(self.folder, "allowed-signers")

    def git(self, *arguments: str) -> str:
        """Run git in the working copy; return its output.

        Raises:
            RuntimeError: git failed.
        """
        return run_checked(["git", "-C", self.work, *GIT_IDENTITY, *arguments])

    def create(self, config: str) -> str:
        """Create the repository, the site's signing key and the nodes' allowed-signers file,
        with a first commit of ``config``; return the commit."""
        run_checked(["git", "init", "--quiet", "--bare", "--initial-branch=main", self.bare])
        run_checked(["git", "clone", "--quiet", self.bare, self.work])
        run_checked(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", SITE_EMAIL, "-f", self.signing_key])
        with open(f"{self.signing_key}.pub", encoding="ascii") as handle:
            key_type, key = handle.read().split()[:2]
        with open(self.allowed_signers, "w", encoding="ascii") as handle:
            handle.write(f"{SITE_EMAIL} {key_type} {key}\n")
        os.chmod(self.allowed_signers, 0o644)  # the nodes' users read it once, at their bootstrap
        self.git("config", "gpg.format", "ssh")
        self.git("config", "user.signingkey", self.signing_key)
        return self.commit(config, "The farm's configuration")

    def commit(self, config: str, message: str, signed: bool = True) -> str:
        """Commit a new config.yaml (signed unless told) and publish it; return the commit."""
        return self.commit_files({"config.yaml": config}, message, signed)

    def commit_files(self, files: dict[str, str | None], message: str, signed: bool = True) -> str:
        """Commit these files of the repository (their text, or None to remove one), signed
        with the site's key unless told, and publish them; return the commit."""
        for name, text in files.items():
            path = os.path.join(self.work, name)
            if text is None:
                self.git("rm", "--quiet", name)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            self.git("add", name)
        self.git(
            "commit", "--quiet", "--allow-empty", "--gpg-sign" if signed else "--no-gpg-sign", "--message", message
        )
        self.git("push", "--quiet", "origin", "HEAD:main")
        return self.git("rev-parse", "HEAD").strip()


@dataclass
class Farm:
    """A running farm (see the module's docstring)."""

    layout: FarmLayout
    ledger: Ledger
    hub: NodeEngine = field(init=False)
    repository: ConfigRepository = field(init=False)
    pool: FarmPool | None = None
    nodes: list[Node] = field(default_factory=list)
    prometheus: FarmPrometheus | None = None

    def __post_init__(self) -> None:
        self.hub = NodeEngine(
            name="the hub",
            folder=os.path.join(self.layout.hub_folder, "engine"),
            namespace=self.layout.hub_namespace,
            cgroup=self.layout.engine_cgroup("hub"),
            bridge=None,
        )
        self.repository = ConfigRepository(os.path.join(self.layout.hub_folder, "git"))

    @property
    def token_folder(self) -> str:
        return os.path.join(self.layout.hub_folder, "pool", "tokens.d")

    @property
    def images_archive(self) -> str:
        """The farm's images, saved from the hub's engine for the nodes' engines."""
        return os.path.join(self.layout.hub_folder, "images.tar")

    @classmethod
    def start(cls, layout: FarmLayout, ledger: Ledger) -> "Farm":
        """Build and start a farm; return it once every node's daemon runs. A failure, or
        Ctrl-C, on the way removes what was made.

        Raises:
            RuntimeError, services.WaitTimeout, subprocess.CalledProcessError: a part did not
                come up.
        """
        farm = cls(layout, ledger)
        try:
            farm.start_hub()
            for number in layout.node_numbers():
                node = Node(layout, number, ledger)
                farm.nodes.append(node)
                node.create(farm.images_archive)
                node.bootstrap(layout.repository_url, farm.repository.allowed_signers)
                node.start_daemon()
            farm.start_prometheus()
        except BaseException:
            farm.stop()
            raise
        return farm

    def start_hub(self) -> None:
        """Make the farm network and start its services: the hub's engine with the farm's
        images, the central manager, the configuration repository and its git daemon."""
        self.ledger.add("folder", self.layout.root)
        os.makedirs(self.layout.hub_folder, mode=0o755)
        os.chmod(self.layout.root, 0o755)  # the nodes' users reach their sockets and the token through it
        if not os.path.exists(DOCKERD_KEY):
            self.ledger.add("file", DOCKERD_KEY)
        # every node's pilots share one parent cgroup: one instance, on one machine
        self.ledger.add("cgroup", self.layout.instance)
        hub = self.layout.hub_namespace
        create_namespace(hub, self.ledger)
        run_checked(in_namespace(hub, ["ip", "link", "add", BRIDGE, "type", "bridge"]))
        run_checked(in_namespace(hub, ["ip", "addr", "add", self.layout.hub_interface, "dev", BRIDGE]))
        run_checked(in_namespace(hub, ["ip", "link", "set", BRIDGE, "up"]))
        self.hub.start(self.ledger)
        self.make_images()
        pool_folder = os.path.join(self.layout.hub_folder, "pool")
        self.pool = FarmPool.start_in_hub(self.hub, self.layout.hub_address, pool_folder)
        self.repository.create(site_config(self.layout, self.token_folder))
        self.start_git_daemon()

    def make_images(self) -> None:
        """Build the pilot images (HTCondor's, Work Queue's) and busybox in the hub's engine,
        and save them for the nodes."""
        builds = (
            [htcondor_pool.BUILD_IMAGE, PILOT_IMAGE],
            [workqueue_manager.BUILD_IMAGE, "--self-contained", WORKQUEUE_IMAGE],
        )
        in_hub = {**os.environ, "DOCKER_HOST": self.hub.url}
        for build in builds:
            subprocess.run(build, env=in_hub, check=True, capture_output=True, text=True, timeout=900)
        # the suite's helper makes busybox in the engine of the Docker socket: here, the hub's
        with mock.patch.object(services, "DOCKER_SOCKET", self.hub.socket):
            services.ensure_busybox_image(BUSYBOX_IMAGE)
        self.hub.docker("save", "--output", self.images_archive, PILOT_IMAGE, WORKQUEUE_IMAGE, BUSYBOX_IMAGE)

    def start_git_daemon(self) -> None:
        """Serve the configuration repository read-only (git://) on the hub's address.

        Raises:
            RuntimeError: the repository cannot be listed through it in time.
        """
        log_path = os.path.join(self.layout.hub_folder, "git-daemon.log")
        command = ["git", "daemon", "--export-all", "--reuseaddr", "--informative-errors",
                   f"--base-path={self.repository.folder}", f"--listen={self.layout.hub_address}",
                   f"--port={GIT_PORT}"]  # fmt: skip
        process = spawn(in_namespace(self.layout.hub_namespace, command), log_path, self.ledger)
        listing = in_namespace(self.layout.hub_namespace, ["git", "ls-remote", self.layout.repository_url])

        def serves() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"git daemon exited with code {process.returncode}: {tail(log_path)}")
            return subprocess.run(listing, capture_output=True, check=False, timeout=30).returncode == 0

        services.poll(serves, 30, "git daemon to serve the configuration repository")

    def start_prometheus(self) -> None:
        """Start the farm's Prometheus, in the hub, scraping every node's metrics_listen."""
        targets = [self.prometheus_target(node) for node in self.nodes]
        folder = os.path.join(self.layout.hub_folder, "prometheus")
        hub = self.layout.hub_namespace
        self.prometheus = FarmPrometheus(folder, hub, self.layout.hub_address, targets, self.ledger)
        self.prometheus.start()

    def start_workqueue_manager(self, tasks: int, sleep: float) -> workqueue_manager.Manager:
        """Start the Work Queue example's manager in the hub's network namespace (its only
        address on the farm network is the hub's, where the nodes' workers reach it) with
        ``tasks`` tasks that sleep ``sleep`` seconds each, and write it down; return it once it
        says its port.

        Raises:
            services.WaitTimeout: it did not say its port in time (with what it wrote).
        """
        folder = os.path.join(self.layout.hub_folder, "workqueue")
        os.makedirs(folder, exist_ok=True)
        manager = workqueue_manager.Manager.start(
            folder, tasks, sleep, debug=True, wrapper=in_namespace(self.layout.hub_namespace, [])
        )
        self.ledger.add_process(manager.process.pid)

        def listens() -> int | None:
            if manager.process.poll() is not None:
                raise services.WaitTimeout(f"the Work Queue manager exited: {manager.output()}")
            return manager.port()

        try:
            services.poll(listens, 30, "the Work Queue manager to listen")
        except BaseException:
            manager.stop()
            raise
        return manager

    def commit_config(self, message: str, signed: bool = True, **overrides: Any) -> str:
        """Commit the site's configuration with these keys changed, signed with the site's key
        unless told; return the commit."""
        return self.repository.commit(site_config(self.layout, self.token_folder, **overrides), message, signed)

    def commit_overlay(self, name: str, overlay: dict[str, Any] | None, message: str) -> str:
        """Commit the overlay ``hosts/NAME.yaml`` (its selector and keys), or remove it (None);
        return the commit."""
        text = None if overlay is None else str(yaml.safe_dump(overlay, sort_keys=False))
        return self.repository.commit_files({f"hosts/{name}.yaml": text}, message)

    def has_overlay(self, name: str) -> bool:
        """Return whether the repository's latest commit holds the overlay ``hosts/NAME.yaml``."""
        return os.path.exists(os.path.join(self.repository.work, "hosts", f"{name}.yaml"))

    def on_every_node(self, action: Callable[[Node], T]) -> list[T]:
        """Run ``action`` on every node at once (as each node's own timer would); return what
        it returned for each node, in the nodes' order."""
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix="farm-node") as executor:
            return list(executor.map(action, self.nodes))

    def one_pilot_more(self) -> int:
        """Return a max_docks that makes every node start a pilot: one more than any node runs
        (a node keeps the pilots above a lowered max_docks until they end)."""
        return max(len(node.running_pilots()) for node in self.nodes) + 1

    def prometheus_target(self, node: Node) -> str:
        """Return the node's scrape target, as Prometheus names it (its instance label)."""
        return f"{node.address}:{METRICS_PORT}"

    def nodes_of_pilots(self, host_names: Sequence[str]) -> dict[str, int]:
        """Given host names of pilots (as HTCondor reports them: the pilot's name at the end),
        return the number of the node whose daemon started each one that a node started."""
        started = {pilot: node.number for node in self.nodes for pilot in STARTED_PILOT.findall(node.log())}
        return {name: number for name in host_names for pilot, number in started.items() if name.endswith(f"-{pilot}")}

    def stop(self) -> None:
        """Stop the nodes and the hub's services, then sweep the ledger: nothing of the farm
        is left on the host afterwards."""
        try:
            if self.prometheus is not None:
                self.prometheus.stop()
            for node in reversed(self.nodes):
                node.stop()
            if self.pool is not None:
                self.pool.stop()
            self.hub.stop()
        finally:
            sweep(self.ledger)


@dataclass
class UpdateRounds:
    """Every node's update (``plancton-bootstrap --update``) run in rounds, every
    :data:`ROUND_SECONDS`, as each node's own timer runs it (nothing else runs the nodes'
    updates in the farm): what each update said, and when each node took each commit."""

    farm: Farm
    begun: float = field(default_factory=time.time)
    said: dict[int, list[str]] = field(default_factory=dict)
    #: the seconds since :attr:`begun` at which each node took a commit, by node number, by
    #: the commit's first 12 digits
    taken: dict[str, dict[int, float]] = field(default_factory=dict)

    def run(self) -> None:
        """Run one round: every node's update at once."""
        finished = self.farm.on_every_node(Node.try_update)
        now = time.time() - self.begun
        for node, done in zip(self.farm.nodes, finished, strict=True):
            text = done.stdout + done.stderr
            self.said.setdefault(node.number, []).append(text)
            for commit in UPDATED_TO.findall(text):
                self.taken.setdefault(commit, {}).setdefault(node.number, now)

    def until(self, predicate: Callable[[], T], bound: float, what: str) -> T:
        """Run rounds until ``predicate``, called after each, returns something true; return
        it (the test fails after ``bound`` seconds)."""

        def round_then_check() -> T:
            self.run()
            return predicate()

        return wait_until(round_then_check, bound, what, interval=ROUND_SECONDS)

    def took(self, commit: str) -> dict[int, float]:
        """Return when each node that took ``commit`` took it (seconds since :attr:`begun`)."""
        return self.taken.get(commit[:12], {})
