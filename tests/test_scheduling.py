"""Host-aware scheduling against the real engine: CPU-burning pilots, a CPU-burning owner."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import pytest

from tests.conftest import BOTH_ENGINES, STEADY_POLICY, Installation, wait_until
from tests.support import services

pytestmark = pytest.mark.docker

BURN = '["sh", "-c", "while :; do :; done"]'
POLICY = """main_sleep: 0.5
cpus_per_dock: 1
max_docks: {ncpus}
docks_per_loop: {ncpus}
owner_busy_percent: 60
owner_idle_percent: 30
pause_delay: 1
vacate_time: 1
grace_spawn: {grace_spawn}
grace_kill: {grace_kill}
docker_cmd: {burn}
"""


def policy(grace_kill: float, grace_spawn: float = 2) -> str:
    ncpus = os.cpu_count() or 1
    return POLICY.format(ncpus=ncpus, grace_kill=grace_kill, grace_spawn=grace_spawn, burn=BURN)


def states(api: docker.APIClient, instance: str) -> list[str]:
    """Return the states of this instance's containers."""
    return sorted(entry["State"] for entry in services.instance_containers(api, instance))


@pytest.fixture
def owner() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Starts, on demand, one CPU-burning process per core: the host's owner at work."""
    burners: list[subprocess.Popen[bytes]] = []
    yield burners
    for burner in burners:
        burner.kill()
        burner.wait()


def start_owner(burners: list[subprocess.Popen[bytes]]) -> None:
    for _ in range(os.cpu_count() or 1):
        burners.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))


def stop_owner(burners: list[subprocess.Popen[bytes]]) -> None:
    for burner in burners:
        burner.kill()
        burner.wait()
    burners.clear()


def full_pool(api: docker.APIClient, instance: str) -> bool:
    return states(api, instance) == ["running"] * (os.cpu_count() or 1)


def test_busy_pilots_are_left_alone_while_the_owner_is_idle(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    installation.write_config(policy(grace_kill=30))
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: full_pool(docker_api, installation.instance), what="a full pool of burning pilots")
    loops = installation.state().loops
    assert isinstance(loops, int)
    wait_until(lambda: installation.state().loops >= loops + 10, what="ten loops")
    sample = installation.state().sample
    assert isinstance(sample, dict)
    # the pilots' own CPU is measured from their cgroup and not taken for the owner's
    assert sample["pilots_cores"] > 0.25 * (os.cpu_count() or 1)
    assert "pausing" not in installation.log() and "stopping pilot" not in installation.log()
    assert full_pool(docker_api, installation.instance)


@BOTH_ENGINES
def test_owner_back_pauses_pilots_and_idle_again_resumes_them(
    installation: Installation, engine_api: docker.APIClient, engine_url: str, owner: list[subprocess.Popen[bytes]]
) -> None:
    installation.write_config(policy(grace_kill=600))
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: full_pool(engine_api, installation.instance), what="a full pool of burning pilots")
    pilots = services.running_ids(engine_api, installation.instance)
    start_owner(owner)
    # every pilot is frozen, although the lowest CPU weight starves it: its weight is lifted
    # for the moment of the freeze
    wait_until(lambda: states(engine_api, installation.instance) == ["paused"] * len(pilots), what="every pilot paused")
    assert "could not be frozen" not in installation.log()
    # and, frozen, the pilots keep the lowest CPU weight that status says their parent has
    cgroup = services.pilot_cgroup(installation.instance, engine_url)
    status = installation.status()["cgroup"]
    assert status["parent"] == cgroup.docker_parent
    setting, value = status["cpu"].split()
    with open(os.path.join(cgroup.cpu_folder, setting), encoding="ascii") as handle:
        assert handle.read().strip() == value
    stop_owner(owner)
    # the daemon says so in its log (the reason in the state file lasts one loop only, which a
    # slow host's polling may miss)
    wait_until(lambda: installation.log().count("resumed pilot") >= len(pilots), what="the pilots resumed")
    wait_until(lambda: full_pool(engine_api, installation.instance), what="the same pilots running again")
    current = services.running_ids(engine_api, installation.instance)
    assert current == pilots
    assert "stopping pilot" not in installation.log()


def test_owner_busy_past_grace_kill_stops_pilots_and_grace_spawn_holds_new_ones(
    installation: Installation, docker_api: docker.APIClient, owner: list[subprocess.Popen[bytes]]
) -> None:
    installation.write_config(policy(grace_kill=3, grace_spawn=4))
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: full_pool(docker_api, installation.instance), what="a full pool of burning pilots")
    start_owner(owner)
    wait_until(
        lambda: set(states(docker_api, installation.instance)) == {"exited"}, what="pilots stopped after grace_kill"
    )
    assert "(owner reclaim)" in installation.log()
    # the engine's work of removing them waits for the owner to be idle
    loops = installation.state().loops
    assert isinstance(loops, int)
    wait_until(lambda: installation.state().loops >= loops + 2, what="two more loops")
    assert set(states(docker_api, installation.instance)) == {"exited"}
    assert any("once it is idle" in reason for reason in installation.state().why)
    stop_owner(owner)
    idle_since = time.monotonic()
    wait_until(lambda: any("grace_spawn" in r for r in installation.state().why), what="grace_spawn hold")
    wait_until(lambda: full_pool(docker_api, installation.instance), what="new pilots after grace_spawn")
    assert time.monotonic() - idle_since >= 4 - 1  # not before grace_spawn (less one sample interval)


def test_modes_survive_a_daemon_restart(installation: Installation, docker_api: docker.APIClient) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 1\ndocker_cmd: sleep 300\n")
    assert installation.ctl("drain").returncode == 0  # set before the daemon ever ran
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: installation.state().loops >= 3, what="three loops")
    assert states(docker_api, installation.instance) == []
    assert installation.ctl("stop").returncode == 0
    assert installation.ctl("start").returncode == 0
    assert installation.status()["mode"] == "draining"
    wait_until(lambda: installation.state().loops >= 3, what="three loops")
    assert states(docker_api, installation.instance) == []
    assert installation.ctl("resume").returncode == 0
    wait_until(lambda: states(docker_api, installation.instance) == ["running"], what="a pilot after resume")
