"""The adapter over the Docker API where Podman answers otherwise: pure parts with plain
asserts, and each difference shown against both real engines."""

import threading
import time
from collections.abc import Iterator

import docker
import pytest

from plancton.config.schema import Config
from plancton.config.ulimits import lowest_hard_limits
from plancton.engines.docker_api import DockerPilots, engine_identity, event_action, is_ours, socket_path
from plancton.engines.spec import container_spec
from plancton.errors import ImageMissing, LimitRefused, PilotGone
from plancton.platform.rlimits import own_hard_limits, process_hard_limits
from tests.conftest import BOTH_ENGINES, STEADY_POLICY, Installation, wait_until
from tests.support import services

# -- pure parts ------------------------------------------------------------------------------


def test_the_engine_names_itself_from_its_version_components() -> None:
    podman = {"Version": "4.3.1", "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}, {"Name": "Conmon"}]}
    docker_engine = {"Version": "20.10.24", "Components": [{"Name": "Engine", "Version": "20.10.24"}]}
    assert engine_identity(podman) == ("Podman Engine", "4.3.1")
    assert engine_identity(docker_engine) == ("Docker Engine", "20.10.24")
    assert engine_identity({"Version": "1.0"}) == ("Docker Engine", "1.0")


def test_podman_event_names_read_as_dockers() -> None:
    assert event_action({"Action": "died"}) == "die"
    assert event_action({"Action": "remove"}) == "destroy"
    assert event_action({"status": "die"}) == "die"
    assert event_action({"Action": "start"}) == "start"


def test_only_the_instance_label_makes_a_pilot() -> None:
    assert is_ours({"org.plancton.instance": "a"}, "a")
    assert not is_ours({"org.plancton.instance": "b"}, "a")
    assert not is_ours(None, "a") and not is_ours({}, "a")


def test_the_local_socket_of_an_engine_address() -> None:
    assert socket_path("unix:///run/podman/podman.sock") == "/run/podman/podman.sock"
    assert socket_path("tcp://host:2376") is None


# -- against the real engines -----------------------------------------------------------------


@pytest.fixture
def adapter(instance: str, engine_url: str) -> Iterator[DockerPilots]:
    """The adapter for this test's instance on the engine under test."""
    yield DockerPilots(instance, engine_url)


def start_pilot(adapter: DockerPilots, command: list[str], **keys: object) -> str:
    """Start one pilot of the adapter's instance, as the daemon would (with these Config
    fields changed), and return its id."""
    config = Config(instance=adapter.instance, docker_cmd=tuple(command), **keys)  # type: ignore[arg-type]
    info = adapter.engine_info()
    ceilings = lowest_hard_limits(own_hard_limits(), process_hard_limits(info.server_pid) if info.server_pid else {})
    token = f"{time.time_ns() % 10**8:08d}"
    return adapter.create_and_start(
        container_spec(config, f"/{adapter.instance}", "host", token, time.time(), ceilings)
    )


@BOTH_ENGINES
def test_the_engines_refusals_come_as_plancton_types(adapter: DockerPilots) -> None:
    """A missing image and a pilot that is gone, as the daemon meets them: typed from
    docker-py's own errors, whatever words each engine uses."""
    assert not adapter.image_present("busybox:no-such-tag") and adapter.image_present("busybox:latest")
    with pytest.raises(ImageMissing):
        start_pilot(adapter, ["sleep", "30"], docker_image="busybox:no-such-tag")
    assert adapter.list() == []
    gone = "0" * 64
    with pytest.raises(PilotGone):
        adapter.pause(gone)
    # stopping, killing, removing or settling a pilot that is gone already is no error
    adapter.stop(gone, 0, paused=True)
    adapter.kill(gone, paused=True)
    adapter.remove(gone)
    adapter.settle(gone)


@BOTH_ENGINES
def test_a_pilot_no_longer_paused_is_stopped_all_the_same(adapter: DockerPilots) -> None:
    """The daemon saw a pilot paused, but it runs again: both engines refuse the unpause in
    words only, and the pilot is stopped all the same."""
    pilot = start_pilot(adapter, ["sleep", "300"])
    adapter.stop(pilot, 0, paused=True)
    assert [p.state for p in adapter.list()] == ["exited"]


@BOTH_ENGINES
def test_engine_info_names_the_engine_and_its_socket_process(adapter: DockerPilots, engine_name: str) -> None:
    info = adapter.engine_info()
    assert info.name == {"docker": "Docker Engine", "podman": "Podman Engine"}[engine_name]
    assert info.version[0].isdigit()
    # the cgroupfs manager on this host: the pilots' parent is a folder, never a slice
    assert info.cgroup_driver == "cgroupfs"
    assert info.server_pid is not None and process_hard_limits(info.server_pid)


@BOTH_ENGINES
def test_a_pilots_death_comes_as_die_with_its_exit_code(adapter: DockerPilots, engine_api: docker.APIClient) -> None:
    events: list[tuple[str, str, int | None]] = []
    watcher = threading.Thread(target=adapter.watch_events, args=(lambda *event: events.append(event),), daemon=True)
    watcher.start()
    time.sleep(1)  # the stream is open
    other = f"{adapter.instance}x"  # another instance's pilot: never reported
    try:
        mine = start_pilot(adapter, ["sh", "-c", "sleep 1; exit 3"])
        start_pilot(DockerPilots(other, adapter.base_url), ["sh", "-c", "exit 4"])
        wait_until(lambda: ("die", mine, 3) in events, timeout=30, what="the die event with exit code 3")
        adapter.remove(mine)
        wait_until(lambda: ("destroy", mine, None) in events, timeout=30, what="the destroy event")
    finally:
        adapter.close_events()
        services.remove_instance(other, str(adapter.base_url))
    assert {container for _, container, _ in events} == {mine}
    assert [pilot.id for pilot in adapter.list()] == []


@BOTH_ENGINES
def test_a_pilot_keeps_the_configured_image_name(adapter: DockerPilots) -> None:
    start_pilot(adapter, ["sleep", "30"])
    # Podman lists it as localhost/busybox:latest; replace_on_image_change compares this name
    assert [pilot.image for pilot in adapter.list()] == ["busybox:latest"]


@pytest.mark.parametrize("engine_name", ["podman"])
def test_a_limit_above_the_engines_names_the_limit_and_the_fix(installation: Installation) -> None:
    """Podman asks the runtime for every limit; above the engine's own hard limit no pilot can
    start on a host without CAP_SYS_RESOURCE (as here), and the log says what to do."""
    too_high = 1 << 30
    installation.write_config(STEADY_POLICY + f"max_docks: 1\nulimits: {{nofile: {too_high}}}\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: "ulimits: {nofile: 1024}" in installation.log(), what="the fix in the log")
    assert f"nofile={too_high}:{too_high}" in installation.log()


@pytest.mark.parametrize("engine_name", ["podman"])
def test_a_limit_the_runtime_cannot_set_comes_as_limit_refused(adapter: DockerPilots) -> None:
    too_high = 1 << 30
    with pytest.raises(LimitRefused) as refused:
        start_pilot(adapter, ["sleep", "30"], ulimits=(("nofile", too_high, too_high),))
    assert refused.value.limit == "nofile"
    assert adapter.list() == []  # a pilot that cannot start is removed
