"""The parts of a farm on one machine: processes started in a network namespace, a Docker
Engine of its own in one, and a node (namespace, engine, owner, user, Plancton daemon).

A node's Plancton is installed as any user in the ``docker`` group would run it (user mode,
``~/.plancton``): its configuration comes from the farm's repository through
``plancton-bootstrap``, and ``planctonctl start`` runs the daemon inside the node's network
namespace, under the node's own host name (a UTS namespace of its own), with ``DOCKER_HOST``
naming the node's engine and ``DBUS_SYSTEM_BUS_ADDRESS`` the node's own bus, where dbusmock's
logind says whether the node's owner is at the keyboard.
"""

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psutil

from tests.farm.layout import NETNS_FOLDER, NODE_LINK, FarmLayout
from tests.farm.ledger import RUN_MARK, Ledger, stop_process
from tests.farm.support import logind_mock, services

#: Where the tier's interpreter lives: the test environment, with Plancton installed in it.
VENV_BIN = os.path.dirname(sys.executable)
BOOTSTRAP = os.path.join(VENV_BIN, "plancton-bootstrap")
START_SECONDS = 90.0
#: A person away from the keyboard this long before the farm starts: well past input_idle.
AWAY_SECONDS = 3600.0
#: How often each node takes its repository's latest commit (plancton-bootstrap --every): a
#: test that runs the node's update entry then waits for its random delay, up to this long.
UPDATE_EVERY = "1m"
#: The environment cron gives a user's crontab entry (besides HOME and LOGNAME).
CRON_ENVIRONMENT = {"SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}


def in_namespace(namespace: str, command: list[str]) -> list[str]:
    """Return ``command`` run in a network namespace. ``nsenter --net`` changes nothing but the
    network: ``ip netns exec`` would also mount a /sys of its own, which hides the cgroup
    hierarchies from a dockerd started through it."""
    return ["nsenter", f"--net={NETNS_FOLDER}/{namespace}", *command]


def run_checked(command: list[str], timeout: float = 120) -> str:
    """Run a command and return its output.

    Raises:
        RuntimeError: it failed (with what it said).
    """
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with code {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def spawn(command: list[str], log_path: str, ledger: Ledger) -> "subprocess.Popen[bytes]":
    """Start a long-running process with its output in ``log_path``, and write it down."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    ledger.add_process(process.pid)
    return process


def tail(path: str, characters: int = 3000) -> str:
    """Return the end of a text file, for an error message ("" when there is none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-characters:]
    except FileNotFoundError:
        return ""


def create_namespace(namespace: str, ledger: Ledger) -> None:
    """Create a network namespace with its loopback up."""
    ledger.add("namespace", namespace)
    run_checked(["ip", "netns", "add", namespace])
    run_checked(in_namespace(namespace, ["ip", "link", "set", "lo", "up"]))


@dataclass
class NodeEngine:
    """A dockerd of its own in a network namespace: its own data root, exec root, pidfile,
    socket and cgroup parent, and the bridge address it gives its containers (or none)."""

    name: str
    folder: str
    namespace: str
    cgroup: str
    bridge: str | None
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def socket(self) -> str:
        return os.path.join(self.folder, "docker.sock")

    @property
    def url(self) -> str:
        """The engine's address, for DOCKER_HOST."""
        return f"unix://{self.socket}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.folder, "dockerd.log")

    def command(self) -> list[str]:
        """Return the dockerd command line: nothing shared with the host's engine."""
        config = os.path.join(self.folder, "daemon.json")
        with open(config, "w", encoding="ascii") as handle:
            handle.write("{}\n")
        network = ["--bip", self.bridge] if self.bridge else ["--bridge", "none", "--iptables=false"]
        return [
            "dockerd",
            f"--config-file={config}",
            f"--data-root={os.path.join(self.folder, 'data')}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={os.path.join(self.folder, 'dockerd.pid')}",
            f"--host={self.url}",
            f"--cgroup-parent=/{self.cgroup}",
            "--log-level=warn",
            *network,
        ]

    def start(self, ledger: Ledger) -> None:
        """Start the engine in its namespace and return once it answers.

        Raises:
            RuntimeError: it did not answer in time (with its log).
        """
        os.makedirs(self.folder, exist_ok=True)
        ledger.add("cgroup", self.cgroup)
        self.process = spawn(in_namespace(self.namespace, self.command()), self.log_path, ledger)
        process = self.process

        def answers() -> bool:
            if process.poll() is not None:
                raise services.WaitTimeout(f"dockerd exited with code {process.returncode}")
            return services.docker_answers(self.url)

        try:
            services.poll(answers, START_SECONDS, f"the engine of {self.name}")
        except services.WaitTimeout as error:
            raise RuntimeError(f"{error}; its log:\n{tail(self.log_path)}") from None

    def client(self, timeout: float = 60) -> "contextlib.AbstractContextManager[docker.APIClient]":
        """A client of this engine, closed afterwards."""
        return services.engine_client(timeout=timeout, url=self.url)

    def docker(self, *arguments: str, timeout: float = 300) -> str:
        """Run the docker command line against this engine; return its output.

        Raises:
            RuntimeError: it failed.
        """
        return run_checked(["docker", "--host", self.url, *arguments], timeout=timeout)

    @property
    def exec_root(self) -> str:
        return os.path.join(self.folder, "exec")

    def processes(self) -> list[psutil.Process]:
        """Return every process of the engine: dockerd and what it started (containerd), and
        each container's shim (which containerd leaves running on its own) with the
        container's processes."""
        found: list[psutil.Process] = []
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                dockerd = psutil.Process(self.process.pid)
                found += [dockerd, *dockerd.children(recursive=True)]
        address = os.path.join(self.exec_root, "containerd", "containerd.sock")
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.name().startswith("containerd-shim") and address in process.cmdline():
                    found += [process, *process.children(recursive=True)]
        return found

    def kill(self) -> None:
        """Kill the engine outright with everything it runs, by their pids (SIGKILL): a crash
        of the engine's service with its control group, containers included."""
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self) -> None:
        """Remove every container of the engine, then stop it by its pid."""
        if self.process is None:
            return
        if self.process.poll() is None and services.docker_answers(self.url):
            with self.client() as client:
                for entry in client.containers(all=True):
                    with contextlib.suppress(docker.errors.NotFound):
                        client.remove_container(entry["Id"], force=True, v=True)
        stop_process(self.process.pid)
        self.process.wait(10)


@dataclass
class Node:
    """One Plancton node of the farm (see the module's docstring)."""

    layout: FarmLayout
    number: int
    ledger: Ledger
    engine: NodeEngine = field(init=False)
    user: pwd.struct_passwd | None = None
    bus: str = ""
    set_idle: Callable[[bool, float], None] | None = None
    owner_stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        self.engine = NodeEngine(
            name=self.name,
            folder=os.path.join(self.folder, "engine"),
            namespace=self.namespace,
            cgroup=self.layout.engine_cgroup(f"n{self.number}"),
            bridge=self.layout.engine_bridge(self.number),
        )

    @property
    def name(self) -> str:
        return f"node {self.number}"

    @property
    def namespace(self) -> str:
        return self.layout.node_namespace(self.number)

    @property
    def folder(self) -> str:
        return self.layout.node_folder(self.number)

    @property
    def address(self) -> str:
        """The node's address on the farm network."""
        return self.layout.node_address(self.number)

    @property
    def host_name(self) -> str:
        """The node's host name, as its Plancton sees it."""
        return self.layout.node_host_name(self.number)

    @property
    def home(self) -> str:
        return os.path.join(self.folder, "home")

    @property
    def plancton_folder(self) -> str:
        """Where the node's Plancton keeps its configuration, state and log (user mode)."""
        return os.path.join(self.home, ".plancton")

    # -- setting up ----------------------------------------------------------------------

    def create(self, images_archive: str) -> None:
        """Set the node up, all but its daemon: its namespace on the farm network, its engine
        with the farm's images, its owner (away from the keyboard) and its user.

        Raises:
            RuntimeError, services.WaitTimeout: a part did not come up.
        """
        os.makedirs(self.folder, mode=0o755)
        os.chmod(self.folder, 0o755)  # whatever the umask: the node's user reaches its sockets through it
        create_namespace(self.namespace, self.ledger)
        self.join_farm_network()
        self.engine.start(self.ledger)
        self.engine.docker("load", "--quiet", "--input", images_archive)
        self.start_owner()
        self.create_user()

    def join_farm_network(self) -> None:
        """Join the node to the farm's bridge with a veth pair (its end named eth0)."""
        hub = self.layout.hub_namespace
        link = self.layout.hub_link(self.number)
        run_checked(["ip", "link", "add", link, "netns", hub, "type", "veth", "peer", "name", NODE_LINK, "netns",
                     self.namespace])  # fmt: skip
        run_checked(in_namespace(hub, ["ip", "link", "set", link, "master", "farm0", "up"]))
        run_checked(in_namespace(self.namespace, ["ip", "addr", "add", self.layout.node_interface(self.number),
                                                  "dev", NODE_LINK]))  # fmt: skip
        run_checked(in_namespace(self.namespace, ["ip", "link", "set", NODE_LINK, "up"]))

    @contextlib.contextmanager
    def cut_off(self) -> Iterator[None]:
        """Cut the node off the farm network for the ``with`` block, as a pulled cable does:
        the hub's end of its veth pair (its port on the farm's bridge) is down, so the node's
        own end loses its carrier and keeps its address and routes; nothing answers or resets
        a connection either way, which stalls in flight. The port is up again afterwards, also
        when the block fails."""
        port = in_namespace(self.layout.hub_namespace, ["ip", "link", "set", self.layout.hub_link(self.number)])
        run_checked([*port, "down"])
        try:
            yield
        finally:
            run_checked([*port, "up"])

    def start_owner(self) -> None:
        """Start the node's own system bus with dbusmock's logind on it: one person's session,
        idle for an hour (the owner is away)."""
        folder = Path(self.folder, "bus")
        folder.mkdir(mode=0o755)
        self.bus = self.owner_stack.enter_context(logind_mock.system_bus(folder))
        self.set_idle = self.owner_stack.enter_context(logind_mock.running_logind(self.bus, folder / "logind.log"))
        self.owner_away()

    def owner_away(self) -> None:
        """The node's owner left the keyboard an hour ago (logind's idle hint)."""
        assert self.set_idle is not None
        self.set_idle(True, time.time() - AWAY_SECONDS)

    def owner_back(self) -> float:
        """The node's owner is at the keyboard now; return the wall-clock time it came back."""
        assert self.set_idle is not None
        now = time.time()
        self.set_idle(False, now)
        return now

    def create_user(self) -> None:
        """Create the user that runs the node's Plancton, in the docker group (which owns the
        node engine's socket, as it owns the host's)."""
        name = self.layout.node_user(self.number)
        self.ledger.add("user", name)
        run_checked(["useradd", "--create-home", "--home-dir", self.home, "--shell", "/bin/sh", "--groups",
                     "docker", name])  # fmt: skip
        self.user = pwd.getpwnam(name)

    # -- Plancton, as the node's user runs it ----------------------------------------------

    def as_user(
        self, *command: str, timeout: float = 120, environment: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of Plancton's as the node's user, in the node's namespace under the
        node's host name, with the node's engine and bus (or only the given environment);
        return the finished process."""
        assert self.user is not None
        if environment is None:
            environment = {
                "HOME": self.home,
                "USER": self.user.pw_name,
                "LOGNAME": self.user.pw_name,
                "LC_ALL": "C.UTF-8",
                "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
                "DOCKER_HOST": self.engine.url,
                "DBUS_SYSTEM_BUS_ADDRESS": self.bus,
            }
        # the run's mark, which the final check finds every process of the run by
        marked = {**environment, RUN_MARK: os.environ.get(RUN_MARK, "")}
        settings = [f"{name}={value}" for name, value in marked.items()]
        as_user = ["runuser", "-u", self.user.pw_name, "--", "env", "-i", *settings, *command]
        # a UTS namespace of its own for each command, under the node's name: a daemon started
        # so keeps it, and dies with it
        named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.host_name, *as_user]
        return subprocess.run(
            in_namespace(self.namespace, named), capture_output=True, text=True, timeout=timeout, check=False,
            cwd="/",
        )  # fmt: skip

    @property
    def label(self) -> str:
        """The label the node is given at bootstrap, which the repository's overlays select it by."""
        return f"node{self.number}"

    def bootstrap(self, repository: str, allowed_signers: str) -> str:
        """Take the configuration from the farm's repository with plancton-bootstrap, with the
        node's label, updates every :data:`UPDATE_EVERY`, and only commits signed by a key of
        the allowed-signers file; return what it said.

        Raises:
            RuntimeError: it failed.
        """
        options = ["--label", self.label, "--every", UPDATE_EVERY, "--trust", allowed_signers]
        return self.checked_bootstrap(repository, *options)

    def update(self) -> str:
        """Take the repository's latest commit at once (plancton-bootstrap --update); return
        what it said.

        Raises:
            RuntimeError: it failed.
        """
        return self.checked_bootstrap("--update")

    def try_update(self) -> subprocess.CompletedProcess[str]:
        """Run plancton-bootstrap --update, which may refuse the latest commit; return the
        finished process."""
        return self.as_user(BOOTSTRAP, "--update")

    def checked_bootstrap(self, *arguments: str) -> str:
        """Run plancton-bootstrap as the node's user; return what it said.

        Raises:
            RuntimeError: it failed.
        """
        done = self.as_user(BOOTSTRAP, *arguments)
        if done.returncode != 0:
            raise RuntimeError(f"plancton-bootstrap {arguments[0]} on {self.name} failed: {done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def update_entry(self) -> str:
        """Return the command of the crontab entry that plancton-bootstrap installed for the
        node's updates (what cron would run, after its five time fields).

        Raises:
            RuntimeError: the node's user has no such entry.
        """
        assert self.user is not None
        crontab = run_checked(["crontab", "-l", "-u", self.user.pw_name])
        for line in crontab.splitlines():
            if "--update" in line and not line.startswith(("#", "@")):
                return line.split(None, 5)[5]
        raise RuntimeError(f"no update entry in the crontab of {self.name}: {crontab}")

    def run_update_entry(self) -> subprocess.CompletedProcess[str]:
        """Run the node's update entry as cron would: by /bin/sh, as the node's user, with
        cron's environment (nothing of the node's engine or bus); return the finished process."""
        assert self.user is not None
        environment = {"HOME": self.home, "LOGNAME": self.user.pw_name, **CRON_ENVIRONMENT}
        return self.as_user("/bin/sh", "-c", self.update_entry(), environment=environment, timeout=300)

    def ctl(self, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run planctonctl on the node as its user; return the finished process."""
        return self.as_user(os.path.join(VENV_BIN, "planctonctl"), *arguments, timeout=timeout)

    def start_daemon(self) -> None:
        """Start the node's Plancton and write its pid down.

        Raises:
            RuntimeError: planctonctl start failed.
        """
        done = self.ctl("start")
        if done.returncode != 0:
            raise RuntimeError(f"planctonctl start on {self.name} failed: {done.stdout}{done.stderr}")
        with open(os.path.join(self.plancton_folder, "run", "plancton.pid"), encoding="ascii") as handle:
            self.ledger.add_process(int(handle.read().split()[0]))

    def checkout_head(self) -> str:
        """Return the commit that the node's configuration checkout is at.

        Raises:
            RuntimeError: git failed.
        """
        done = self.as_user("git", "-C", os.path.join(self.plancton_folder, "conf"), "rev-parse", "HEAD")
        if done.returncode != 0:
            raise RuntimeError(f"git rev-parse on {self.name} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def status(self) -> dict[str, Any]:
        """Return ``planctonctl status --json``."""
        return dict(json.loads(self.ctl("status", "--json").stdout))

    def log(self) -> str:
        """Return the daemon's log so far."""
        return tail(os.path.join(self.plancton_folder, "log", "plancton.log"), characters=10**7)

    def report(self) -> str:
        """Return what a failure's report shows of the node: its pilots as its engine lists
        them, why its daemon holds them, the end of its daemon's and its engine's logs."""
        try:
            with self.engine.client() as client:
                pilots = [f"{entry['Names'][0].lstrip('/')} {entry['Status']}" for entry in client.containers(all=True)]
        except docker.errors.DockerException as error:
            pilots = [f"(the engine did not list them: {error})"]
        why = self.ctl("status", "--why").stdout.strip()
        daemon = "\n".join(self.log().splitlines()[-40:])
        return (
            f"--- {self.name}: pilots {pilots}; status --why: {why}\n{daemon}\n"
            f"--- the end of {self.name}'s engine's log:\n{tail(self.engine.log_path, 2000)}"
        )

    def pilot_entries(self) -> dict[str, dict[str, Any]]:
        """Return the engine's listing of each of the instance's containers, by name."""
        with self.engine.client() as client:
            return {
                entry["Names"][0].lstrip("/"): entry
                for entry in services.instance_containers(client, self.layout.instance)
            }

    def pilot_states(self) -> dict[str, str]:
        """Return the state of each of the instance's containers in the node's engine, by name."""
        return {name: entry["State"] for name, entry in self.pilot_entries().items()}

    def running_pilots(self) -> set[str]:
        """Return the names of the instance's running containers in the node's engine."""
        return {name for name, state in self.pilot_states().items() if state == "running"}

    def pilot_images(self) -> set[str]:
        """Return the images of the instance's containers in the node's engine, running or not."""
        return {entry["Image"] for entry in self.pilot_entries().values()}

    def shutdowntimes_seen(self) -> dict[str, str]:
        """Return what each running pilot reads, as its own user, in
        ``$MACHINEFEATURES/shutdowntime`` ("" when there is no such file), by name."""
        command = ["sh", "-c", 'cat "$MACHINEFEATURES/shutdowntime" 2>/dev/null || true']
        seen = {}
        with self.engine.client() as client:
            for name in self.running_pilots():
                with contextlib.suppress(docker.errors.APIError):  # it ended meanwhile
                    execution = client.exec_create(name, command)
                    seen[name] = client.exec_start(execution["Id"]).decode(errors="replace").strip()
        return seen

    # -- tearing down ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the daemon, remove the pilots and stop the engine and the owner's bus; the
        farm's ledger removes the rest (user, namespace, folders, cgroups)."""
        if self.user is not None:
            self.ctl("stop", "--timeout", "20")
        self.engine.stop()
        self.owner_stack.close()
