"""The owner's side against the real engine: the ledger through SIGKILLs, the snooze, and
lending part of the host (lend_cores) under a CPU cap on the pilots' parent cgroup."""

import datetime
import json
import os
import signal
import time
from typing import Any

import docker
import pytest

from plancton.control.pidfile import read_pid
from plancton.platform.cgroups import PilotCgroup
from tests.conftest import Installation, wait_until
from tests.support import services

pytestmark = pytest.mark.docker

BURN = '["sh", "-c", "while :; do :; done"]'
POLICY = f"""main_sleep: 0.5
max_docks: 2
docks_per_loop: 2
cpus_per_dock: 0.5
vacate_time: 1
grace_kill: 600
grace_spawn: 1
docker_cmd: {BURN}
"""


def states(api: docker.APIClient, instance: str) -> list[str]:
    return sorted(entry["State"] for entry in services.instance_containers(api, instance))


def pilots_cgroup(api: docker.APIClient, instance: str) -> PilotCgroup:
    """The pilots' parent cgroup, found as the daemon finds it: from what the engine says."""
    info = api.info()
    return PilotCgroup(instance, info["CgroupDriver"], int(info.get("CgroupVersion") or 1))


def stats(installation: Installation) -> Any:
    shown = installation.ctl("stats", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def start_two_pilots(installation: Installation, api: docker.APIClient) -> None:
    installation.write_config(POLICY)
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: states(api, installation.instance) == ["running"] * 2, what="two burning pilots")


def test_the_ledger_counts_every_cpu_second_once_through_five_sigkills(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    start_two_pilots(installation, docker_api)
    for _ in range(5):
        time.sleep(2)
        pid = read_pid(os.path.join(installation.rundir, "plancton.pid"))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), what="the daemon killed")  # noqa: B023
        assert installation.ctl("start").returncode == 0
    time.sleep(2)
    # the pilots stop; once the counter stands still, the ledger must hold all of it
    assert installation.ctl("force-stop").returncode == 0
    wait_until(lambda: states(docker_api, installation.instance) == [], timeout=90, what="the pilots gone")
    cgroup = pilots_cgroup(docker_api, installation.instance)
    counted = cgroup.cpu_seconds()
    assert counted is not None and counted > 5
    loops = installation.state().loops
    wait_until(lambda: installation.state().loops >= loops + 3, what="three loops with the pilots gone")
    ledger = stats(installation)
    assert ledger["all_time"]["cpu_seconds"] == pytest.approx(counted, rel=0.01)
    # adopted pilots are not started again, and each pilot ended once, by force-stop
    assert ledger["all_time"]["started"] == 2
    assert ledger["all_time"]["ended"] == {"other": 2}
    assert list(ledger["days"]) == [datetime.date.today().isoformat()]


def test_a_snooze_pauses_the_pilots_survives_a_restart_and_ends_by_itself(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    start_two_pilots(installation, docker_api)
    snoozed = installation.ctl("snooze", "25s")
    assert snoozed.returncode == 0 and "notified" in snoozed.stdout, snoozed.stderr
    wait_until(lambda: states(docker_api, installation.instance) == ["paused"] * 2, what="pilots paused")
    assert "snooze" in installation.status()["holds"]
    assert "snoozed until" in installation.ctl("status").stdout
    assert installation.ctl("stop").returncode == 0
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: "snooze" in installation.status()["holds"], what="the snooze kept across a restart")
    assert states(docker_api, installation.instance) == ["paused"] * 2
    wait_until(lambda: states(docker_api, installation.instance) == ["running"] * 2, timeout=60, what="resumed")
    assert "snooze over" in installation.log()
    assert installation.status()["snooze_until"] is None


def test_snooze_cancel_brings_the_pilots_back(installation: Installation, docker_api: docker.APIClient) -> None:
    start_two_pilots(installation, docker_api)
    assert installation.ctl("snooze", "1h").returncode == 0
    wait_until(lambda: states(docker_api, installation.instance) == ["paused"] * 2, what="pilots paused")
    assert installation.ctl("snooze", "--cancel").returncode == 0
    wait_until(lambda: states(docker_api, installation.instance) == ["running"] * 2, what="pilots resumed")


def test_lend_cores_keeps_pilots_running_under_a_cap_while_the_owner_is_present(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    # outside run_hours the owner counts as present: a window on a day that is not today
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).strftime("%a")
    installation.write_config(
        POLICY.replace("cpus_per_dock: 0.5", "cpus_per_dock: 2") + f'lend_cores: 1\nrun_hours: ["{tomorrow}"]\n'
    )
    assert installation.ctl("start").returncode == 0
    # with the owner present from the start, only the lent pilot starts
    wait_until(lambda: states(docker_api, installation.instance) == ["running"], what="one lent pilot")
    wait_until(lambda: "lending 1 cores" in installation.ctl("status").stdout, what="status says it lends")
    cgroup = pilots_cgroup(docker_api, installation.instance)
    first, started = cgroup.cpu_seconds(), time.monotonic()
    time.sleep(10)
    last, ended = cgroup.cpu_seconds(), time.monotonic()
    assert first is not None and last is not None
    cores = (last - first) / (ended - started)
    assert 0.3 < cores <= 1.05, f"the lent pilot used {cores:.2f} cores under a cap of 1"
    # the owner leaves (run_hours opens): the cap goes and the pool fills
    installation.write_config(POLICY.replace("cpus_per_dock: 0.5", "cpus_per_dock: 2") + "lend_cores: 1\n")
    assert installation.ctl("reload").returncode == 0
    wait_until(lambda: states(docker_api, installation.instance) == ["running"] * 2, what="the pool full again")
    wait_until(lambda: "lending" not in installation.ctl("status").stdout, what="the cap lifted")
    assert "pilots' CPU cap lifted" in installation.log()
