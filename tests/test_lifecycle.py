"""The daemon's lifecycle through planctonctl, as a user drives it, on a real Docker Engine."""

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import docker
import psutil
import pytest

from tests.conftest import BOTH_ENGINES, STEADY_POLICY, Installation, venv_command, wait_until
from tests.support import services

pytestmark = pytest.mark.docker


def pilot_ids(api: docker.APIClient, instance: str, state: str = "running") -> set[str]:
    """Return the ids of this instance's containers in a state."""
    return {entry["Id"] for entry in services.instance_containers(api, instance) if entry["State"] == state}


def daemons_of(setup: Installation) -> list[psutil.Process]:
    """Return the live Plancton daemon processes that use this installation's run folder."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if setup.rundir in cmdline and "start" not in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


@BOTH_ENGINES
def test_start_status_stop_and_adoption(
    installation: Installation, engine_api: docker.APIClient, engine_name: str
) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 2\ndocker_cmd: sleep 300\n")
    started = installation.ctl("start")
    assert started.returncode == 0, started.stderr
    status = installation.status()
    assert status["running"] is True and isinstance(status["pid"], int)
    assert status["mode"] == "active"
    pilots = wait_until(lambda: len(pilot_ids(engine_api, installation.instance)) == 2 and installation.status())
    assert isinstance(pilots, dict)
    before = pilot_ids(engine_api, installation.instance)

    text = installation.ctl("status")
    assert text.returncode == 0
    assert f"pid {status['pid']}" in text.stdout and "mode active" in text.stdout
    # the engine that answers, by the name and version it gives itself
    answering = {"docker": "engine Docker Engine ", "podman": "engine Podman Engine "}[engine_name]
    assert answering in text.stdout
    assert f"# the running daemon's engine: {answering[7:]}" in installation.ctl("config").stdout

    again = installation.ctl("start")
    assert again.returncode == 0 and f"already running (pid {status['pid']})" in again.stdout

    stopped = installation.ctl("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not os.path.exists(os.path.join(installation.rundir, "plancton.pid"))
    assert installation.ctl("status").returncode == 3
    # stopping Plancton never disturbs the pilots
    assert pilot_ids(engine_api, installation.instance) == before

    assert installation.ctl("start").returncode == 0
    wait_until(lambda: installation.state().loops >= 3, what="three loops of the new daemon")
    # the new daemon adopts the running pilots and starts no extra one
    assert pilot_ids(engine_api, installation.instance) == before
    assert len(installation.status()["pilots"]) == 2


def test_status_json_when_not_running(installation: Installation) -> None:
    result = installation.ctl("status", "--json")
    assert result.returncode == 3
    assert '"running": false' in result.stdout


def test_stale_pidfile_never_blocks_a_start(installation: Installation) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 0\n")
    gone = subprocess.Popen(["true"])
    gone.wait()
    os.makedirs(installation.rundir, mode=0o700, exist_ok=True)
    with open(os.path.join(installation.rundir, "plancton.pid"), "w", encoding="ascii") as handle:
        handle.write(f"{gone.pid}\n")
    assert installation.ctl("status").returncode == 3
    result = installation.ctl("start")
    assert result.returncode == 0, result.stderr
    assert installation.status()["pid"] != gone.pid


def test_two_concurrent_starts_give_one_daemon(installation: Installation) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 0\n")
    os.makedirs(installation.rundir, mode=0o700, exist_ok=True)
    command = installation.command("start")
    launches = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [launch.communicate(timeout=120) for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs
    time.sleep(1.0)  # let a losing daemon, if any, finish exiting
    daemons = daemons_of(installation)
    assert len(daemons) == 1, [process.cmdline() for process in daemons]
    assert installation.status()["pid"] == daemons[0].pid


def test_stop_kills_a_daemon_that_ignores_sigterm(installation: Installation) -> None:
    """A daemon stuck past the timeout is killed and its pidfile removed."""
    installation.write_config(STEADY_POLICY + "max_docks: 0\n")
    assert installation.ctl("start").returncode == 0
    pid = installation.status()["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGSTOP)  # a frozen daemon cannot act on SIGTERM
    try:
        result = installation.ctl("stop", "--timeout", "1")
    finally:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGCONT)
    assert result.returncode == 0
    assert "SIGKILL" in result.stdout
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not os.path.exists(os.path.join(installation.rundir, "plancton.pid"))


@pytest.fixture
def foreground(installation: Installation) -> Iterator[subprocess.Popen[str]]:
    installation.write_config(STEADY_POLICY + "max_docks: 1\ndocker_cmd: sleep 300\n")
    command = installation.command("foreground")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_foreground_logs_to_stderr_and_ends_on_sigterm(
    installation: Installation, foreground: subprocess.Popen[str], docker_api: docker.APIClient
) -> None:
    wait_until(lambda: installation.state().pid == foreground.pid, what="the foreground daemon's state")
    assert installation.status()["pid"] == foreground.pid
    wait_until(lambda: pilot_ids(docker_api, installation.instance), what="a pilot")

    assert installation.ctl("reload").returncode == 0
    wait_until(lambda: "reloading the configuration" in installation.log(), what="the reload in the log")

    assert installation.ctl("drain").returncode == 0
    wait_until(lambda: installation.state().mode == "draining", what="draining mode")
    assert installation.status()["mode"] == "draining"

    foreground.send_signal(signal.SIGTERM)
    _, stderr = foreground.communicate(timeout=60)
    assert foreground.returncode == 0
    assert "Plancton stopped" in stderr and "mode changed from active to draining" in stderr
    assert pilot_ids(docker_api, installation.instance)  # the pilot outlives the daemon


@BOTH_ENGINES
def test_mode_verbs_reach_the_daemon(installation: Installation, engine_api: docker.APIClient) -> None:
    installation.write_config(STEADY_POLICY + "max_docks: 1\ndocker_cmd: sleep 300\nvacate_time: 1\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: pilot_ids(engine_api, installation.instance), what="a pilot")
    assert installation.ctl("force-stop").returncode == 0
    wait_until(lambda: not pilot_ids(engine_api, installation.instance), what="force-stop to stop the pilot")
    assert installation.status()["mode"] == "force-stop"
    assert installation.ctl("force-start").returncode == 0
    wait_until(lambda: pilot_ids(engine_api, installation.instance), what="force-start to start a pilot")
    assert installation.ctl("drain-stop").returncode == 0
    assert installation.ctl("resume").returncode == 0
    assert installation.status()["mode"] == "active"
    assert installation.ctl("drain-stop").returncode == 0
    assert installation.ctl("force-stop").returncode == 0  # pilots go, then drain-stop would end it
    wait_until(lambda: installation.status()["mode"] == "force-stop", what="force-stop mode")
    assert installation.ctl("drain-stop").returncode == 0
    wait_until(lambda: installation.ctl("status").returncode == 3, what="drain-stop to end the daemon")
    assert "drain-stop complete" in installation.log()
    assert services.instance_cgroups(installation.instance) == []  # the pilots' cgroup went with them
    assert installation.status()["mode"] == "active"  # the next start is an ordinary one


def test_usage_errors() -> None:
    ctl = venv_command("planctonctl")
    unknown = subprocess.run([ctl, "frobnicate"], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2
    assert "usage:" in unknown.stderr and "invalid choice" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    version = subprocess.run([ctl, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and "Plancton" in version.stdout
    helped = subprocess.run([ctl, "help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0
    for verb in ("start", "stop", "status", "foreground", "drain", "drain-stop", "force-start", "reload"):
        assert verb in helped.stdout


def test_reload_without_daemon_says_so(installation: Installation) -> None:
    result = installation.ctl("reload")
    assert result.returncode == 7
    assert "not running" in result.stderr
