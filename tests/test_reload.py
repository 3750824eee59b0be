"""Hot reload of the configuration in a running daemon, on a real Docker Engine: a valid change
applies to the next pilots, an invalid one is logged and the daemon runs on unchanged.
"""

from collections.abc import Iterator

import docker
import pytest

from tests.conftest import STEADY_POLICY, Installation, wait_until
from tests.support import services

pytestmark = pytest.mark.docker

#: Only an explicit reload applies a change (the file is checked once an hour).
BY_RELOAD = STEADY_POLICY + "updateconfig: 1h\n"


def pilots(api: docker.APIClient, instance: str) -> dict[str, dict[str, object]]:
    """Return this instance's running pilots: id to image and command."""
    found = {}
    for entry in services.instance_containers(api, instance, running_only=True):
        details = api.inspect_container(entry["Id"])
        found[entry["Id"]] = {"image": details["Config"]["Image"], "command": details["Config"]["Cmd"]}
    return found


def revision(setup: Installation) -> object:
    """Return the configuration revision that the running daemon reports."""
    return setup.status()["config_revision"]


def wait_for_loops(setup: Installation, count: int) -> None:
    """Wait until the daemon has run ``count`` more loops."""
    loops = setup.state().loops
    wait_until(lambda: setup.state().loops >= loops + count, what=f"{count} more loops")


def wait_for_pilots(api: docker.APIClient, instance: str, count: int) -> dict[str, dict[str, object]]:
    """Wait until exactly ``count`` pilots run; return them."""
    found: dict[str, dict[str, object]] = {}

    def counted() -> bool:
        found.clear()
        found.update(pilots(api, instance))
        return len(found) == count

    wait_until(counted, what=f"{count} running pilots")
    return found


def start(setup: Installation, api: docker.APIClient, config: str, count: int) -> dict[str, dict[str, object]]:
    """Write the configuration, start the daemon and wait for ``count`` pilots; return them."""
    setup.write_config(config)
    started = setup.ctl("start")
    assert started.returncode == 0, started.stderr
    return wait_for_pilots(api, setup.instance, count)


@pytest.fixture
def second_image(docker_api: docker.APIClient, instance: str) -> Iterator[str]:
    """Another name for the local busybox image, as a new release of the pilots' image."""
    repository = f"plancton-reload-{instance}"
    docker_api.tag("busybox:latest", repository, "v2")
    yield f"{repository}:v2"
    docker_api.remove_image(f"{repository}:v2")


def test_a_valid_change_applies_to_new_pilots_on_reload(
    installation: Installation, docker_api: docker.APIClient, second_image: str
) -> None:
    first = start(installation, docker_api, BY_RELOAD + "max_docks: 1\ndocker_cmd: sleep 300\n", count=1)
    old_revision = revision(installation)
    installation.write_config(BY_RELOAD + f"max_docks: 2\ndocker_cmd: sleep 301\ndocker_image: {second_image}\n")
    wait_for_loops(installation, 3)
    assert pilots(docker_api, installation.instance) == first  # not applied before the reload
    pending = installation.ctl("config")
    assert f"# the running daemon still uses revision {old_revision}: reload it" in pending.stdout

    reloaded = installation.ctl("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    now = wait_for_pilots(docker_api, installation.instance, 2)
    (old_id,) = first
    assert now[old_id] == first[old_id]  # the running pilot is left alone
    (new_pilot,) = [pilot for pilot_id, pilot in now.items() if pilot_id != old_id]
    assert new_pilot == {"image": second_image, "command": ["sleep", "301"]}
    assert revision(installation) != old_revision
    assert "applied (changed: max_docks, docker_image, docker_cmd)" in installation.log()


def test_an_invalid_change_is_rejected_and_the_daemon_runs_on(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    first = start(installation, docker_api, BY_RELOAD + "max_docks: 1\ndocker_cmd: sleep 300\n", count=1)
    good_revision = revision(installation)

    installation.write_config(BY_RELOAD + "max_docks: 2\nmax_dock_mem: lots\nvacate_time: never\n")
    assert installation.ctl("reload").returncode == 0
    wait_until(lambda: "rejected" in installation.log(), what="the rejection in the log")
    log = installation.log()
    assert f"configuration {installation.config_file} rejected, keeping revision {good_revision}" in log
    assert 'max_dock_mem: expected a size such as 2000000000 or "2G", got "lots"' in log
    assert 'vacate_time: expected seconds such as 30 or "5m", got "never"' in log
    shown = installation.ctl("config")
    assert shown.returncode == 1
    assert f"the running daemon keeps its last valid configuration (revision {good_revision})" in shown.stderr

    with open(installation.config_file, "w", encoding="utf-8") as handle:
        handle.write("max_docks: !!python/object/apply:os.system ['touch /tmp/plancton-reload-must-not-run']\n")
    assert installation.ctl("reload").returncode == 0
    wait_until(lambda: installation.log().count("rejected") == 2, what="the second rejection in the log")
    assert "could not determine a constructor for the tag" in installation.log()

    wait_for_loops(installation, 3)
    status = installation.status()
    assert status["running"] is True
    assert status["config_revision"] == good_revision
    assert pilots(docker_api, installation.instance) == first  # max_docks 2 was not applied
    assert "Traceback" not in installation.log()

    # once the file is fixed, the next reload applies it
    installation.write_config(BY_RELOAD + "max_docks: 2\ndocker_cmd: sleep 300\n")
    assert installation.ctl("reload").returncode == 0
    wait_for_pilots(docker_api, installation.instance, 2)


def test_a_changed_file_is_noticed_without_a_reload(installation: Installation, docker_api: docker.APIClient) -> None:
    automatic = STEADY_POLICY + "updateconfig: 1\ndocker_cmd: sleep 300\n"
    start(installation, docker_api, automatic + "max_docks: 1\n", count=1)

    installation.write_config(automatic + "max_docks: 2\n")
    wait_for_pilots(docker_api, installation.instance, 2)
    assert "applied (changed: max_docks)" in installation.log()

    # an invalid file is rejected once, not at every check
    installation.write_config(automatic + "max_docks: lots\n")
    wait_until(lambda: "rejected" in installation.log(), what="the rejection in the log")
    wait_for_loops(installation, 6)
    assert installation.log().count("rejected") == 1
    assert installation.status()["running"] is True
    assert len(pilots(docker_api, installation.instance)) == 2
