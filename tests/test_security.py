"""Security: hostile configuration values stay plain data, control files resist planted
symlinks and shared folders, dangerous pilots need an explicit yes, credentials stay hidden."""

import os
import stat
from collections.abc import Iterator
from typing import Any

import docker
import psutil
import pytest

from plancton.config.loader import load, parse
from plancton.config.schema import HostFacts
from plancton.engines.spec import container_spec
from plancton.errors import ConfigError
from tests.conftest import STEADY_POLICY, Installation, wait_until
from tests.support import services

FACTS = HostFacts(ncpus=2, ram_bytes=8 * 1024**3, swap_bytes=0)
PASSWORD = "s3cr3t-Pa55word"


@pytest.mark.parametrize(
    "bind",
    [
        "/:/host",
        "//:/host",
        "/var/run/docker.sock:/var/run/docker.sock",
        "/run/docker.sock:/sock:ro",
        "/var/run/../run/docker.sock:/sock",
        "/var/run:/run-of-host",
    ],
)
def test_binds_that_hand_over_the_host_need_an_explicit_yes(bind: str) -> None:
    with pytest.raises(ConfigError, match="allow_dangerous_binds"):
        parse({"binds": [bind]}, FACTS)
    config, _ = parse({"binds": [bind], "allow_dangerous_binds": True}, FACTS)
    assert config.binds == (bind,)


def test_shell_text_in_commands_and_binds_is_plain_data() -> None:
    hostile = "echo $(touch /tmp/owned) `id`; rm -rf / && sleep 1 | cat > /etc/passwd"
    config, _ = parse({"docker_cmd": hostile, "binds": ["/tmp/a;b$(x):/data"]}, FACTS)
    spec = container_spec(config, "/plancton", "host", "abcd", 0.0)
    # split into arguments like a shell would, but no shell ever sees them
    assert spec.command[:3] == ["echo", "$(touch", "/tmp/owned)"]
    assert "`id`;" in spec.command and "&&" in spec.command and "/etc/passwd" in spec.command
    assert spec.host_config["binds"] == ["/tmp/a;b$(x):/data:ro"]


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['touch /tmp/plancton-owned']",
        "max_docks: !!python/object/apply:os.system ['touch /tmp/plancton-owned']",
        "max_docks: __import__('os').system('touch /tmp/plancton-owned')",
        "max_docks: (1).__class__.__bases__",
        "max_docks: open('/etc/passwd')",
    ],
)
def test_hostile_yaml_and_expressions_are_rejected(text: str, tmp_path: "os.PathLike[str]") -> None:
    path = os.path.join(tmp_path, "config.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    with pytest.raises(ConfigError):
        load(path, FACTS)
    assert not os.path.exists("/tmp/plancton-owned")


def first_pilot(installation: Installation, docker_api: docker.APIClient) -> dict[str, Any]:
    """Start the daemon and return the engine's record of its first running pilot."""
    assert installation.ctl("start").returncode == 0
    ids = wait_until(lambda: services.running_ids(docker_api, installation.instance), what="a pilot")
    assert isinstance(ids, set)
    return dict(docker_api.inspect_container(next(iter(ids))))


@pytest.mark.docker
def test_hostile_command_runs_as_plain_arguments(installation: Installation, docker_api: docker.APIClient) -> None:
    installation.write_config(STEADY_POLICY + 'max_docks: 1\ndocker_cmd: "sleep 300 ; touch /tmp/plancton-owned"\n')
    command = first_pilot(installation, docker_api)["Config"]["Cmd"]
    assert command == ["sleep", "300", ";", "touch", "/tmp/plancton-owned"]
    assert not os.path.exists("/tmp/plancton-owned")


@pytest.fixture
def victim(installation: Installation, tmp_path: "os.PathLike[str]") -> Iterator[str]:
    """A file of another user's, for symlinks planted in the run folder; afterwards it must be
    untouched."""
    path = os.path.join(tmp_path, "victim")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("precious\n")
    installation.write_config(STEADY_POLICY + "max_docks: 0\n")
    os.makedirs(installation.rundir, mode=0o700)
    yield path
    with open(path, encoding="utf-8") as handle:
        assert handle.read() == "precious\n"


@pytest.mark.docker
def test_a_planted_pidfile_symlink_is_refused(installation: Installation, victim: str) -> None:
    os.symlink(victim, os.path.join(installation.rundir, "plancton.pid"))
    result = installation.ctl("foreground", timeout=60)
    assert result.returncode == 1
    assert "symlink" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.docker
def test_planted_state_and_mode_symlinks_are_replaced_not_followed(installation: Installation, victim: str) -> None:
    for name in ("state.json", "mode"):
        os.symlink(victim, os.path.join(installation.rundir, name))
    assert installation.ctl("drain").returncode == 0
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: installation.state().loops >= 2, what="two loops")
    for name in ("state.json", "mode"):
        info = os.lstat(os.path.join(installation.rundir, name))
        assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o644


@pytest.mark.docker
def test_a_world_writable_run_folder_is_refused(installation: Installation) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 0\n")
    os.makedirs(installation.rundir)
    os.chmod(installation.rundir, 0o777)
    result = installation.ctl("start")
    assert result.returncode == 1
    assert "other users may write" in result.stderr and installation.rundir in result.stderr


@pytest.mark.docker
def test_privileged_only_when_asked_and_then_warned(installation: Installation, docker_api: docker.APIClient) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 1\ndocker_cmd: sleep 300\ndocker_privileged: true\n")
    assert first_pilot(installation, docker_api)["HostConfig"]["Privileged"] is True
    assert "privileged pilots: docker_privileged is true" in installation.log()


@pytest.mark.docker
def test_credentials_never_shown(installation: Installation) -> None:
    url = f"http://plancton:{PASSWORD}@127.0.0.1:9#metrics"
    installation.write_config(STEADY_POLICY + f'max_docks: 0\ninfluxdb_url: "{url}"\n')
    outputs = [installation.ctl("check-config"), installation.ctl("config"), installation.ctl("start")]
    wait_until(lambda: installation.state().loops >= 4, what="a few loops")
    outputs += [installation.ctl("status"), installation.ctl("status", "--json")]
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
    assert "plancton:****@127.0.0.1:9" in outputs[1].stdout
    assert PASSWORD not in installation.log()
    with open(os.path.join(installation.rundir, "state.json"), encoding="utf-8") as handle:
        assert PASSWORD not in handle.read()
    pid = installation.status()["pid"]
    assert isinstance(pid, int)
    assert PASSWORD not in " ".join(psutil.Process(pid).cmdline())
