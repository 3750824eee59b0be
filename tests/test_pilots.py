"""Pilot containers against the real engine: caps, labels, replacement, TTL, images, and
nothing foreign ever touched."""

import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterator

import docker
import pytest
from docker.constants import DEFAULT_NUM_POOLS

from plancton.control import machinefeatures
from plancton.daemon.actions import START_CONCURRENCY
from plancton.engines.spec import LABEL_CREATED, LABEL_INSTANCE, LABEL_REVISION
from tests.conftest import BOTH_ENGINES, STEADY_POLICY, Installation, wait_until
from tests.support import services

pytestmark = pytest.mark.docker
MIB = 1024**2


def pilots(api: docker.APIClient, instance: str, state: str | None = "running") -> list[dict[str, object]]:
    """Return this instance's pilots (in one state, or all, spares included)."""
    entries = services.instance_containers(api, instance, spares=state is None)
    return [entry for entry in entries if state is None or entry["State"] == state]


@BOTH_ENGINES
def test_host_config_matches_the_configuration(
    installation: Installation, engine_api: docker.APIClient, engine_name: str, engine_url: str
) -> None:
    installation.write_config(
        STEADY_POLICY
        + """max_docks: 1
docker_cmd: ["sleep", "300"]
cpus_per_dock: 0.5
max_dock_mem: 64M
max_dock_swap: 32M
pids_limit: 100
user_group: "1000:1000"
binds: ["/usr:/host-usr", "/var/tmp:/scratch:rw"]
devices: ["/dev/zero"]
capabilities: ["+NET_ADMIN", "-CHOWN"]
environment: {TASK_QUEUE: alice, SLOTS: 2}
"""
    )
    assert installation.ctl("start").returncode == 0
    entries = wait_until(lambda: pilots(engine_api, installation.instance), what="a pilot")
    assert isinstance(entries, list)
    details = engine_api.inspect_container(entries[0]["Id"])
    host = details["HostConfig"]
    assert (host["CpuQuota"], host["CpuPeriod"]) == (50_000, 100_000)
    assert host["Memory"] == 64 * MIB
    assert host["MemorySwap"] == 96 * MIB
    assert host["PidsLimit"] == 100
    # Podman adds the propagation it applies ("ro,rprivate,rbind")
    binds = sorted((bind.split(":")[0], bind.split(":")[1], bind.split(":")[2].split(",")[0]) for bind in host["Binds"])
    # the configured binds, and the machine-features folder (the drain deadline) that every pilot has
    features = (os.path.join(installation.rundir, machinefeatures.FOLDER), machinefeatures.IN_PILOT, "ro")
    assert binds == sorted([("/usr", "/host-usr", "ro"), ("/var/tmp", "/scratch", "rw"), features])
    assert [device["PathOnHost"] for device in host["Devices"]] == ["/dev/zero"]
    # Podman lists every capability it drops, its defaults' too
    assert host["CapAdd"] == ["NET_ADMIN"] and "CHOWN" in host["CapDrop"] and "NET_ADMIN" not in host["CapDrop"]
    assert {"no-new-privileges:true", "no-new-privileges"} & set(host["SecurityOpt"])
    with open(f"/proc/{details['State']['Pid']}/status", encoding="ascii") as status:
        assert "NoNewPrivs:\t1" in status.read()
    # Docker's pilots inherit the engine's own limits; Podman, which would ask for about a
    # million, is held to nofile and nproc no higher than the daemon's hard limits
    limits = {limit["Name"].lower().removeprefix("rlimit_"): limit["Hard"] for limit in host["Ulimits"] or []}
    if engine_name == "docker":
        assert limits == {}
    for name, number in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(number)[1]
        assert engine_name == "docker" or hard == resource.RLIM_INFINITY or 0 < limits[name] <= hard
    assert host["Privileged"] is False
    assert host["CpuShares"] == 2
    assert host["CgroupParent"] == services.pilot_cgroup(installation.instance, engine_url).docker_parent
    config = details["Config"]
    assert config["User"] == "1000:1000"
    assert config["Cmd"] == ["sleep", "300"]
    assert {"TASK_QUEUE=alice", "SLOTS=2"} <= set(config["Env"])
    assert config["Labels"][LABEL_INSTANCE] == installation.instance
    assert float(config["Labels"][LABEL_CREATED]) > 0 and config["Labels"][LABEL_REVISION]
    assert config["Hostname"].startswith(socket.gethostname().split(".")[0][:40])
    assert config["Hostname"].endswith(details["Name"].lstrip("/").split("-")[-1])


def listed_in_hosts_file(name: str, text: str) -> bool:
    """Return whether a hosts file's text gives an address for this name."""
    return any(name in line.split("#")[0].split()[1:] for line in text.splitlines())


@BOTH_ENGINES
def test_a_pilot_on_the_hosts_network_bears_the_hosts_name(
    installation: Installation, engine_api: docker.APIClient
) -> None:
    """On the host's network a pilot bears the host's name, which it resolves as the host does
    (software such as the Work Queue worker looks its own name up)."""
    command = "hostname; cat /etc/hosts; echo END; sleep 300"
    installation.write_config(STEADY_POLICY + f"max_docks: 1\nnetwork_mode: host\ndocker_cmd: [sh, -c, '{command}']\n")
    assert installation.ctl("start").returncode == 0
    entries = wait_until(lambda: pilots(engine_api, installation.instance), what="a pilot")
    assert isinstance(entries, list)

    def output() -> str:
        """The pilot's output so far: the engine hands its log over as it comes."""
        return str(engine_api.logs(entries[0]["Id"]).decode())

    wait_until(lambda: output().endswith("END\n"), what="the pilot's output")
    name, _, hosts = output().removesuffix("END\n").partition("\n")
    assert name == socket.gethostname()
    with open("/etc/hosts", encoding="utf-8") as handle:
        if listed_in_hosts_file(name, handle.read()):
            assert listed_in_hosts_file(name, hosts), hosts


@pytest.fixture
def owners_container(docker_api: docker.APIClient, instance: str) -> Iterator[str]:
    """The owner's own container, named like a pilot but without Plancton's label."""
    name = f"plancton-worker-{instance}"
    created = docker_api.create_container("busybox:latest", ["sleep", "600"], name=name)
    docker_api.start(created["Id"])
    yield created["Id"]
    docker_api.remove_container(created["Id"], force=True)


def test_the_owners_container_survives_every_action(
    installation: Installation, docker_api: docker.APIClient, owners_container: str
) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 2\ndocker_cmd: sleep 300\nmax_ttl: 3\nvacate_time: 1\n")
    assert installation.ctl("start").returncode == 0
    # the pool fills to max_docks: the owner's container is not counted
    wait_until(lambda: len(pilots(docker_api, installation.instance)) == 2, what="two pilots")
    wait_until(lambda: "(ttl)" in installation.log(), what="a TTL stop")
    for verb in ("drain", "force-stop", "resume", "force-stop"):
        assert installation.ctl(verb).returncode == 0
    wait_until(lambda: not pilots(docker_api, installation.instance, None), what="every pilot gone")
    assert installation.ctl("stop").returncode == 0
    assert docker_api.inspect_container(owners_container)["State"]["Running"] is True


@BOTH_ENGINES
def test_a_killed_pilot_is_replaced(
    installation: Installation, engine_api: docker.APIClient, record_property: Callable[[str, object], None]
) -> None:
    # a long main_sleep: only the Docker event can make the replacement quick
    installation.write_config(STEADY_POLICY.replace("main_sleep: 0.5", "main_sleep: 30") + "max_docks: 1\n")
    assert installation.ctl("start").returncode == 0
    first = wait_until(lambda: pilots(engine_api, installation.instance), what="a pilot")
    assert isinstance(first, list)
    killed_at = time.monotonic()
    engine_api.kill(first[0]["Id"])
    replacement = wait_until(
        lambda: [p for p in pilots(engine_api, installation.instance) if p["Id"] != first[0]["Id"]],
        timeout=30,
        what="a replacement pilot",
    )
    latency = time.monotonic() - killed_at
    record_property("replacement_seconds", round(latency, 3))
    print(f"replacement latency {latency:.3f} s (bench/ measures it properly)")
    assert isinstance(replacement, list) and len(replacement) == 1
    wait_until(lambda: "with code 137" in installation.log(), what="the exit code in the log")
    assert not pilots(engine_api, installation.instance, "exited")


def test_exited_pilots_are_removed_with_their_exit_code(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    installation.write_config(STEADY_POLICY + 'max_docks: 1\ndocker_cmd: ["sh", "-c", "sleep 4; exit 3"]\n')
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: "exited with code 3 after" in installation.log(), what="the exit in the log")
    wait_until(lambda: pilots(docker_api, installation.instance), what="the replacement")
    assert not pilots(docker_api, installation.instance, "exited")


@BOTH_ENGINES
def test_ttl_expiry_stops_and_replaces(installation: Installation, engine_api: docker.APIClient) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 1\ndocker_cmd: sleep 300\nmax_ttl: 2\nvacate_time: 1\n")
    assert installation.ctl("start").returncode == 0
    first = wait_until(lambda: pilots(engine_api, installation.instance), what="a pilot")
    assert isinstance(first, list)
    wait_until(lambda: "(ttl)" in installation.log(), what="the TTL stop")
    wait_until(
        lambda: [p for p in pilots(engine_api, installation.instance) if p["Id"] != first[0]["Id"]],
        what="a fresh pilot after the TTL",
    )


def test_a_pilot_that_cannot_start_backs_off(installation: Installation, docker_api: docker.APIClient) -> None:
    installation.write_config(STEADY_POLICY + 'max_docks: 2\ndocker_cmd: ["/no/such/program"]\n')
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: "backing off" in installation.log(), what="the back-off in the log")
    loops = installation.state().loops
    assert isinstance(loops, int)
    time.sleep(3)
    log = installation.log()
    assert "cannot start a pilot" in log and "no/such/program" in log
    # failed containers are removed, and the back-off bounds the attempts
    assert not pilots(docker_api, installation.instance, None)
    assert log.count("cannot start a pilot") <= 6
    assert installation.ctl("status").returncode == 0


def test_pilots_that_exit_instantly_are_throttled(installation: Installation) -> None:
    installation.write_config(STEADY_POLICY + 'max_docks: 2\ndocker_cmd: ["true"]\n')
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: "keep exiting within seconds" in installation.log(), what="the throttle in the log")
    started = installation.log().count("started pilot")
    time.sleep(3)
    # in back-off, hardly any new start (5 s after the third quick exit, doubling after)
    assert installation.log().count("started pilot") <= started + 2


def test_missing_image_with_pull_policy_never(installation: Installation, docker_api: docker.APIClient) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 1\ndocker_image: plancton-absent:1\npull_policy: never\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: installation.state().loops >= 4, what="a few loops")
    log = installation.log()
    assert log.count("image plancton-absent:1 is not available") == 1  # once per retry period
    assert not pilots(docker_api, installation.instance, None)


def test_local_image_is_used_when_the_pull_fails(installation: Installation, docker_api: docker.APIClient) -> None:
    """No registry is reachable here: pull_policy always keeps using the local busybox."""
    installation.write_config(STEADY_POLICY + "max_docks: 1\ndocker_cmd: sleep 300\npull_policy: always\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: pilots(docker_api, installation.instance), timeout=120, what="a pilot from the local image")
    wait_until(lambda: "using the local image" in installation.log(), timeout=120, what="the failed pull in the log")


def test_one_list_call_per_loop_whatever_the_pool_size(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 6\ndocks_per_loop: 6\ndocker_cmd: sleep 300\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: len(pilots(docker_api, installation.instance)) == 6, what="six pilots")
    loops = installation.state().loops
    assert isinstance(loops, int)
    wait_until(lambda: installation.state().loops >= loops + 3, what="three steady loops")
    assert installation.state().api_calls_last_loop == 1


def open_sockets(pid: int) -> int:
    """Return how many sockets the process has open."""
    folder = f"/proc/{pid}/fd"
    return sum(os.readlink(os.path.join(folder, fd)).startswith("socket:") for fd in os.listdir(folder))


def test_engine_connections_stay_few_however_many_pilots_come_and_go(installation: Installation) -> None:
    """Each pilot's requests have URLs of their own, and the Docker SDK keeps a connection pool
    per URL, up to ``DEFAULT_NUM_POOLS`` of them: more pilots than that must not mean more sockets."""
    installation.write_config(STEADY_POLICY + "max_docks: 6\ndocks_per_loop: 6\ndocker_cmd: sleep 4\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: installation.log().count("started pilot") >= 40, timeout=180, what="40 pilots started")
    pid = installation.state().pid
    assert isinstance(pid, int)
    # the pools, the starts in flight, the event stream and a log socket at most
    assert open_sockets(pid) <= DEFAULT_NUM_POOLS + START_CONCURRENCY + 2 < 40


@BOTH_ENGINES
def test_a_pilots_end_starts_its_spare_which_follows_the_configuration(
    installation: Installation, engine_api: docker.APIClient
) -> None:
    """Once the pool is full a spare waits, created but not started, and a pilot's end starts
    it; a reload that changes the pilots' container makes the spare again, and the daemon's
    stop removes it, leaving the pool running."""
    installation.write_config(STEADY_POLICY + "max_docks: 2\ndocker_cmd: sleep 300\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: len(pilots(engine_api, installation.instance)) == 2, what="two pilots")
    spare = wait_until(lambda: services.spare_ids(engine_api, installation.instance), what="the spare")
    assert isinstance(spare, set)
    (waiting,) = spare
    assert engine_api.inspect_container(waiting)["State"]["Status"] == "created"

    def ids(state: str | None = "running") -> set[str]:
        return {str(entry["Id"]) for entry in pilots(engine_api, installation.instance, state)}

    ended = min(ids())
    os.kill(engine_api.inspect_container(ended)["State"]["Pid"], signal.SIGKILL)
    wait_until(lambda: waiting in ids(), what="the spare running")
    wait_until(lambda: ended not in ids(None), what="the ended pilot removed")
    next_spare = wait_until(lambda: services.spare_ids(engine_api, installation.instance), timeout=30, what="a spare")
    assert isinstance(next_spare, set) and waiting not in next_spare

    installation.write_config(STEADY_POLICY + "max_docks: 2\ndocker_cmd: sleep 301\n")
    assert installation.ctl("reload").returncode == 0
    wait_until(
        lambda: services.spare_ids(engine_api, installation.instance) - next_spare, timeout=30, what="a fresh spare"
    )
    (fresh,) = services.spare_ids(engine_api, installation.instance)
    assert engine_api.inspect_container(fresh)["Config"]["Cmd"] == ["sleep", "301"]

    running = ids()
    assert installation.ctl("stop").returncode == 0
    assert not services.spare_ids(engine_api, installation.instance)
    assert ids(None) == running
