"""Plancton run by an unprivileged user: user-mode folders, and clear errors without Docker access."""

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator

import docker
import pytest

from tests.conftest import (
    STEADY_POLICY,
    Engine,
    make_user,
    run_as,
    venv_command,
    wait_until,
)
from tests.support import services

pytestmark = pytest.mark.docker


def as_user(user: pwd.struct_passwd, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run planctonctl as this user and return the finished process."""
    return run_as(user, venv_command("planctonctl"), *args, timeout=timeout)


@pytest.fixture
def docker_user(docker_engine: Engine) -> Iterator[pwd.struct_passwd]:
    user = make_user("plancton-tester", ["docker"])
    yield user
    as_user(user, "stop", "--timeout", "20")
    services.remove_instance("usermode")
    subprocess.run(["userdel", "-r", user.pw_name], capture_output=True, check=False)


@pytest.fixture
def outsider(docker_engine: Engine) -> Iterator[pwd.struct_passwd]:
    user = make_user("plancton-outsider", [])
    yield user
    subprocess.run(["userdel", "-r", user.pw_name], capture_output=True, check=False)


def test_user_mode_in_the_docker_group(docker_user: pwd.struct_passwd) -> None:
    home = os.path.join(docker_user.pw_dir, ".plancton")
    os.makedirs(os.path.join(home, "conf"))
    with open(os.path.join(home, "conf", "config.yaml"), "w", encoding="utf-8") as handle:
        handle.write(f"instance: usermode\n{STEADY_POLICY}max_docks: 1\ndocker_cmd: sleep 300\n")
    shutil.chown(home, docker_user.pw_uid, docker_user.pw_gid)
    shutil.chown(os.path.join(home, "conf"), docker_user.pw_uid, docker_user.pw_gid)

    started = as_user(docker_user, "start")
    assert started.returncode == 0, started.stderr
    for folder in ("run", "log"):
        info = os.stat(os.path.join(home, folder))
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == docker_user.pw_uid
    assert as_user(docker_user, "status").returncode == 0
    client = docker.APIClient(version="auto")
    try:
        wait_until(
            lambda: client.containers(filters={"label": ["org.plancton.instance=usermode"]}),
            what="the user's pilot",
        )
    finally:
        client.close()
    with open(os.path.join(home, "log", "plancton.log"), encoding="utf-8") as handle:
        log = handle.read()
    assert "running as root" not in log
    assert "lowest CPU weight" in log  # unprivileged: it says what it could not do, and goes on
    assert as_user(docker_user, "stop").returncode == 0


def test_no_docker_access_is_one_clear_line(outsider: pwd.struct_passwd) -> None:
    result = as_user(outsider, "start")
    assert result.returncode == 1
    assert "permission denied on the Docker socket" in result.stderr
    assert "docker group" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unwritable_folder_is_one_clear_line(outsider: pwd.struct_passwd) -> None:
    result = as_user(outsider, "--rundir", "/var/lib/plancton-nowhere", "start")
    assert result.returncode == 1
    assert "/var/lib/plancton-nowhere" in result.stderr and "Traceback" not in result.stderr
