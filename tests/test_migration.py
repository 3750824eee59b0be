"""Coming from Plancton 0.6: its configurations are read with their meaning or refused with
the right key named, its leftovers on the host (pidfile, mode files, pilots) are recognised,
a pilot gets the binds, devices and capabilities written in the original's forms (real
engine), and its InfluxDB series keep an existing dashboard working (real InfluxDB).
"""

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from plancton.config import legacy_keys
from plancton.config.loader import load, parse
from plancton.config.schema import HostFacts
from plancton.control import legacy
from plancton.core.modes import Mode
from plancton.core.policy import HostSample
from plancton.engines.spec import container_spec
from plancton.errors import ConfigError
from plancton.metrics.influx_reporter import InfluxReporter
from plancton.metrics.reporting import LoopReport, PilotEvent
from tests.conftest import STEADY_POLICY, Installation, wait_until
from tests.support.influx_server import InfluxServer, server_fixture

FACTS = HostFacts(ncpus=8, ram_bytes=16 * 1024**3, swap_bytes=0)

#: A configuration as a site wrote it for Plancton 0.6 (its keys, its forms).
ORIGINAL_CONFIG = """\
docker_image: alisw/slc6-builder
docker_cmd: /usr/bin/run-pilot --verbose
max_docks: ncpus - 2
binds:
  - /cvmfs:/cvmfs:rw,shared
  - /etc/plancton/condor:/etc/condor/config.d
devices:
  - PathOnHost: /dev/fuse
    PathInContainer: /dev/fuse
    CgroupPermissions: rw
capabilities: [SYS_ADMIN, -NET_RAW]
"""


def _parse_error(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse(raw, FACTS, source="/etc/plancton/config.yaml")
    return error.value.problems


# -- configurations written for the original ---------------------------------------------------


def test_a_configuration_of_the_original_runs_its_pilot_with_its_meaning(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(ORIGINAL_CONFIG)
    config, warnings = load(str(path), FACTS)
    assert warnings == []
    assert (config.docker_image, config.docker_cmd) == ("alisw/slc6-builder", ("/usr/bin/run-pilot", "--verbose"))
    spec = container_spec(config, "/plancton", "node1", "abcd", 0.0)
    assert spec.host_config["binds"] == ["/cvmfs:/cvmfs:rw,shared", "/etc/plancton/condor:/etc/condor/config.d:ro"]
    assert spec.host_config["devices"] == ["/dev/fuse:/dev/fuse:rw"]
    assert (spec.host_config["cap_add"], spec.host_config["cap_drop"]) == (["SYS_ADMIN"], ["NET_RAW"])


def test_older_keys_are_read_as_todays_with_a_warning_naming_it() -> None:
    raw = {
        "pilot_dock": "centos:centos6",
        "pilot_entrypoint": "/bin/pilot",
        "pilot_privileged": True,
        "maxcontainers": 3,
        "secopt": ["apparmor=unconfined"],
        "influxdb_address": "influx.example.org:8086",
        "database_name": "farm",
    }
    config, warnings = parse(raw, FACTS, source="old.yaml")
    assert (config.docker_image, config.docker_cmd, config.docker_privileged) == (
        "centos:centos6",
        ("/bin/pilot",),
        True,
    )
    assert (config.max_docks, config.security_opts) == ("3", ("apparmor=unconfined",))
    assert config.influxdb_url == ("http://influx.example.org:8086#farm",)
    assert config.from_file >= {"docker_image", "docker_cmd", "docker_privileged", "max_docks", "influxdb_url"}
    assert warnings == [
        "old.yaml: pilot_dock: read as docker_image, its name since Plancton 0.6; rename it",
        "old.yaml: pilot_entrypoint: read as docker_cmd, its name since Plancton 0.6; rename it",
        "old.yaml: pilot_privileged: read as docker_privileged, its name since Plancton 0.6; rename it",
        "old.yaml: maxcontainers: read as max_docks, its name since Plancton 0.6; rename it",
        "old.yaml: secopt: read as security_opts, its name since Plancton 0.6; rename it",
        'old.yaml: influxdb_address, database_name: read as influxdb_url "http://influx.example.org:8086#farm";'
        " write that instead",
    ]


def test_older_keys_without_an_equivalent_are_warned_with_what_to_use() -> None:
    config, warnings = parse({"morbidity": 30, "dock_condor_conf": ["a"], "max_docks": 2}, FACTS, source="f")
    assert config.main_sleep == 5.0
    assert warnings == [
        "f: morbidity: a key of Plancton before 0.6, ignored; use main_sleep (seconds between two loops)",
        "f: dock_condor_conf: a key of Plancton before 0.6, ignored; "
        "use binds (bind the HTCondor configuration files into the pilots)",
    ]


def test_an_older_key_beside_its_new_name_is_an_error_listed_with_the_others() -> None:
    problems = _parse_error({"pilot_dock": "centos:6", "docker_image": "centos:7", "max_dock_mem": "lots"})
    assert problems == [
        "pilot_dock: the older name of docker_image, which is set too; remove pilot_dock",
        'max_dock_mem: expected a size such as 2000000000 or "2G", got "lots"',
    ]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            {"image": "alice/pilot:1"},
            "image: not a key of Plancton, so the pilots would run the default image; set docker_image instead",
        ),
        ({"docker_img": "alice/pilot:1"}, "docker_img: not a key of Plancton, so the pilots would run the default"),
        (
            {"docker_comand": "run-pilot"},
            "docker_comand: not a key of Plancton, so the pilots would run the default command; set docker_cmd instead",
        ),
        ({"entrypoint": ["/bin/pilot"]}, "set docker_cmd instead"),
    ],
)
def test_an_image_or_command_under_a_key_plancton_does_not_read_is_refused(raw: dict[str, Any], problem: str) -> None:
    problems = _parse_error(raw)
    assert len(problems) == 1 and problem in problems[0], problems


def test_an_unread_image_key_is_only_a_warning_when_the_image_is_set_or_the_default() -> None:
    _, warnings = parse({"docker_image": "alice/pilot:1", "image": "alice/pilot:2"}, FACTS)
    assert warnings == ['configuration: unknown key "image" ignored']
    _, warnings = parse({"docker_command": "sleep 60"}, FACTS)
    assert warnings == ['configuration: unknown key "docker_command" ignored (did you mean "docker_cmd"?)']


# -- the original's leftovers ----------------------------------------------------------------------


@pytest.fixture
def old_daemon(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process that looks like the original's daemon: a script named planctonctl, not run
    by Python 3, with its pid in a pidfile of the original's."""
    script = tmp_path / "bin" / "planctonctl"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")
    script.chmod(0o755)
    process = subprocess.Popen(["/bin/sh", str(script), "start"])
    (tmp_path / "plancton.pid").write_text(f"{process.pid}\n")
    yield process
    process.kill()
    process.wait()


def test_a_live_daemon_of_the_original_is_found_from_its_pidfile(
    tmp_path: Path, old_daemon: subprocess.Popen[bytes]
) -> None:
    pidfile = str(tmp_path / "plancton.pid")
    assert legacy.running_legacy_daemon(pidfile) == old_daemon.pid
    assert f"pid {old_daemon.pid}" in legacy.legacy_daemon_message(old_daemon.pid, pidfile)
    # the same pid named by our own pidfile is ours, not the original's
    (tmp_path / "ours.pid").write_text(f"{old_daemon.pid}\n")
    assert legacy.running_legacy_daemon(pidfile, own_pidfiles=(str(tmp_path / "ours.pid"),)) is None
    old_daemon.kill()
    old_daemon.wait()
    assert legacy.running_legacy_daemon(pidfile) is None


def test_other_processes_named_in_the_pidfile_are_not_the_original(tmp_path: Path) -> None:
    pidfile = tmp_path / "plancton.pid"
    assert legacy.running_legacy_daemon(str(pidfile)) is None  # no pidfile
    for text in ("", "garbage", "-5", "99999999"):
        pidfile.write_text(text)
        assert legacy.running_legacy_daemon(str(pidfile)) is None
    with subprocess.Popen(["sleep", "300"]) as unrelated:
        pidfile.write_text(str(unrelated.pid))
        assert legacy.running_legacy_daemon(str(pidfile)) is None
        unrelated.kill()
    pidfile.write_text(str(os.getpid()))
    assert legacy.running_legacy_daemon(str(pidfile)) is None


def test_our_own_daemon_is_never_taken_for_the_original() -> None:
    ours = ["/opt/plancton/venv/bin/python3", "/opt/plancton/venv/bin/planctonctl", "foreground"]
    assert not legacy.is_legacy_process(ours, "/usr/bin/python3.11")
    assert not legacy.is_legacy_process(["/home/a/.local/bin/planctonctl", "start"], "/usr/bin/python3.12")
    assert not legacy.is_legacy_process([sys.executable, "-m", "plancton.cli.planctonctl", "start"])
    assert legacy.is_legacy_process(["/usr/bin/python", "/usr/bin/planctonctl", "start"], "/usr/bin/python2.7")


@pytest.mark.parametrize(
    ("files", "mode"),
    [
        (["drain"], Mode.DRAINING),
        (["drain", "stop"], Mode.DRAIN_STOP),
        (["force-stop"], Mode.FORCE_STOP),
        (["force-stop", "drain", "stop"], Mode.FORCE_STOP),
        (["stop"], None),
        ([], None),
    ],
)
def test_the_originals_mode_files_give_the_new_mode_once(tmp_path: Path, files: list[str], mode: Mode | None) -> None:
    for name in files:
        (tmp_path / name).touch()
    (tmp_path / "mode").write_text("active\n")  # ours stays
    taken, found = legacy.take_legacy_mode(str(tmp_path))
    assert taken == mode and sorted(found) == sorted(files)
    assert sorted(os.listdir(tmp_path)) == ["mode"]
    assert legacy.take_legacy_mode(str(tmp_path)) == (None, [])
    if files:
        message = legacy.legacy_mode_message(taken, found, str(tmp_path))
        assert str(tmp_path / files[0]) in message
        assert ("planctonctl resume" in message) == (mode is not None)


def test_the_originals_pilots_are_told_from_ours() -> None:
    assert legacy.is_legacy_pilot({"Names": ["/plancton-worker-a1b2c3"], "Labels": {}})
    assert legacy.is_legacy_pilot({"Names": ["/plancton-worker-zz"], "Labels": None})
    ours = {"Names": ["/plancton-worker-x"], "Labels": {legacy.INSTANCE_LABEL: "plancton"}}
    assert not legacy.is_legacy_pilot(ours)
    assert not legacy.is_legacy_pilot({"Names": ["/plancton-abcd"], "Labels": {}})
    assert not legacy.is_legacy_pilot({"Names": ["/web"], "Labels": {}})
    message = legacy.legacy_pilots_message([f"plancton-worker-{index}" for index in range(7)])
    assert message.startswith("7 pilot(s) of the original Plancton") and "and 2 more" in message


def test_the_originals_pilots_are_listed_and_removed_only_when_asked(
    installation: Installation, docker_api: docker.APIClient
) -> None:
    """A pilot of the original (named plancton-worker-*, no label) on the same engine: the
    daemon lists it in status and leaves it alone, and removes it after legacy_pilots: remove."""
    name = f"plancton-worker-{secrets.token_hex(3)}"
    container = docker_api.create_container("busybox:latest", ["sleep", "300"], name=name)["Id"]
    try:
        docker_api.start(container)
        policy = STEADY_POLICY + "max_docks: 1\ndocker_cmd: sleep 300\nvacate_time: 1\n"
        installation.write_config(policy)
        assert installation.ctl("start").returncode == 0
        wait_until(lambda: installation.status()["legacy_pilots"] == [name], what="the original's pilot listed")
        shown = installation.ctl("status").stdout
        assert f"1 pilot(s) of the original Plancton (0.6) are on this host and are not managed: {name}" in shown
        assert docker_api.inspect_container(container)["State"]["Running"]
        assert name not in [pilot["name"] for pilot in installation.status()["pilots"]]

        installation.write_config(policy + "legacy_pilots: remove\n")
        assert installation.ctl("reload").returncode == 0
        wait_until(lambda: not docker_api.containers(all=True, filters={"name": [name]}), what="its removal")
        wait_until(lambda: installation.status()["legacy_pilots"] == [], what="status to drop it")
        assert f"removed the original Plancton's pilot {name}" in installation.log()
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_api.remove_container(container, force=True)


# -- a real engine: what the original's forms give a pilot ------------------------------------------


@pytest.fixture
def shared_folder(tmp_path: Path) -> Iterator[str]:
    """A folder that is a shared mount point, as /cvmfs is on a site (bind propagation
    ``shared`` needs one); unmounted afterwards."""
    folder = tmp_path / "cvmfs"
    folder.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(folder)], check=True)
        yield str(folder)
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.docker
def test_a_pilot_gets_the_originals_binds_devices_and_capabilities(
    shared_folder: str, instance: str, docker_api: docker.APIClient
) -> None:
    raw = {
        "instance": instance,
        "docker_cmd": ["sh", "-c", "touch /cvmfs/written && grep ' /cvmfs ' /proc/self/mountinfo"],
        "user_group": None,
        "binds": [f"{shared_folder}:/cvmfs:rw,shared,Z", f"{shared_folder}:/readonly:rslave"],
        "devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rw"}],
        "capabilities": ["SYS_ADMIN", "-NET_RAW"],
    }
    config, _ = parse(raw, FACTS)
    spec = container_spec(config, "", "node1", secrets.token_hex(3), time.time())
    # created as the Docker adapter creates pilots
    created = docker_api.create_container(
        image=spec.image,
        command=spec.command,
        name=spec.name,
        labels=spec.labels,
        host_config=docker_api.create_host_config(**spec.host_config),
    )
    docker_api.start(created["Id"])
    wait_until(lambda: docker_api.inspect_container(created["Id"])["State"]["Status"] == "exited", 60, "the pilot")
    inspected = docker_api.inspect_container(created["Id"])
    host_config = inspected["HostConfig"]
    assert host_config["Binds"] == [f"{shared_folder}:/cvmfs:rw,shared,Z", f"{shared_folder}:/readonly:rslave,ro"]
    mounts = {mount["Destination"]: mount for mount in inspected["Mounts"]}
    assert (mounts["/cvmfs"]["RW"], mounts["/cvmfs"]["Propagation"]) == (True, "shared")
    assert (mounts["/readonly"]["RW"], mounts["/readonly"]["Propagation"]) == (False, "rslave")
    assert host_config["Devices"] == [
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rw"}
    ]
    assert (host_config["CapAdd"], host_config["CapDrop"]) == (["SYS_ADMIN"], ["NET_RAW"])
    assert inspected["State"]["ExitCode"] == 0
    assert "shared:" in docker_api.logs(created["Id"]).decode()
    assert os.path.exists(os.path.join(shared_folder, "written"))


# -- a real InfluxDB: the original's series ------------------------------------------------------------

influxd = server_fixture()

#: What the original wrote, in its line protocol (numbers without a type suffix are floats).
ORIGINAL_LINES = (
    "daemon,hostname=node1 uptime=30.0\n"
    'daemon,hostname=node1 containers=2,status="active"\n'
    "measurement,hostname=node1 cpu_eff=55.0\n"
    "container,hostname=node1,started=True,killed=False uptime=3600.0\n"
)
#: Queries of a dashboard made for the original.
DASHBOARD = {
    "containers": """SELECT last("containers") FROM "daemon" WHERE "hostname" = 'node1'""",
    "status": """SELECT last("status") FROM "daemon" WHERE "hostname" = 'node1'""",
    "uptime": """SELECT last("uptime") FROM "daemon" WHERE "hostname" = 'node1'""",
    "cpu": """SELECT last("cpu_eff") FROM "measurement" WHERE "hostname" = 'node1'""",
    "killed": """SELECT count("uptime") FROM "container" WHERE "killed" = 'True'""",
    "exited": """SELECT sum("uptime") FROM "container" WHERE "started" = 'True' AND "killed" = 'False'""",
    "never_started": """SELECT count("uptime") FROM "container" WHERE "started" = 'False'""",
}


def _dashboard(server: InfluxServer, database: str) -> dict[str, Any]:
    found = {}
    for name, query in DASHBOARD.items():
        series = server.series(query, database)
        found[name] = series[0]["values"][0][1] if series else None
    return found


@pytest.mark.influxdb
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_the_originals_series_keep_its_dashboard_working(influxd: InfluxServer) -> None:
    database = f"farm_{secrets.token_hex(4)}"
    influxd.query(f'CREATE DATABASE "{database}"')
    # the database the original filled for years
    written = requests.post(f"{influxd.base}/write", params={"db": database}, data=ORIGINAL_LINES, timeout=30)
    assert written.status_code == 204, written.text
    config, _ = parse({"influxdb_url": influxd.url(database), "influxdb_legacy_series": True}, FACTS)
    reporter = InfluxReporter(host_name="node1.example.org")
    reporter.configure(config)
    sample = HostSample(ncpus=4, busy_cores=3.0, pilots_cores=2.0, available_bytes=2**30)
    report = LoopReport("draining", 90.0, {"running": 3, "paused": 1, "exited": 2}, "r", sample, 0.01, 1, True)
    reporter.loop(report)
    for event in (
        PilotEvent("started", "p1"),
        PilotEvent("exited", "p1", exit_code=0, runtime_seconds=600.0),
        PilotEvent("killed", "p2", reason="owner reclaim", runtime_seconds=60.0),
        PilotEvent("start_failed", "", reason="no such image"),
    ):
        reporter.pilot_event(event)
    reporter.close()

    expected = {
        "containers": 4.0,
        "status": "draining",
        "uptime": 90.0,
        "cpu": 75.0,
        "killed": 1,
        "exited": 4200.0,
        "never_started": 1,
    }
    wait_until(lambda: _dashboard(influxd, database) == expected, 30, "the original's series")
    # the new series go to the same database beside them
    assert influxd.rows("plancton_daemon", database)


@pytest.mark.influxdb
def test_without_the_option_the_originals_series_are_not_written(influxd: InfluxServer) -> None:
    database = f"farm_{secrets.token_hex(4)}"
    config, _ = parse({"influxdb_url": influxd.url(database)}, FACTS)
    reporter = InfluxReporter(host_name="node1")
    reporter.configure(config)
    reporter.loop(LoopReport("active", 5.0, {"running": 1}, "r", None, 0.01, 1, True))
    reporter.pilot_event(PilotEvent("exited", "p1", exit_code=0, runtime_seconds=6.0))
    reporter.close()
    wait_until(lambda: influxd.rows("plancton_daemon", database), 30, "the daemon's point")
    assert influxd.rows("daemon", database) == [] and influxd.rows("container", database) == []


def test_a_wrong_value_under_an_older_key_names_that_key() -> None:
    assert _parse_error({"pilot_dock": "Not An Image"}) == [
        'pilot_dock (read as docker_image): expected text such as "busybox:latest", got "Not An Image"',
        "pilot_dock: read as docker_image, its name since Plancton 0.6; rename it",
    ]


def test_settings_the_original_read_differently_get_a_note_each() -> None:
    raw = {"binds": ["/cvmfs:/cvmfs", "/data:/data:rw,shared", "/etc/x:/x:Z"], "grace_kill": 300, "grace_spawn": 60}
    config, _ = parse(raw, FACTS)
    notes = legacy_keys.changed_meanings(config)
    assert [note.split(":")[0] + " " + note.split(" ")[1] for note in notes] == [
        "binds /cvmfs:/cvmfs",
        "binds /etc/x:/x:Z",
        "user_group pilots",
        "grace_kill counts",
        "grace_spawn counts",
    ]
    assert 'set user_group: "0:0"' in notes[2] and "pause_delay + grace_kill" in notes[3]
    config, _ = parse({"binds": ["/cvmfs:/cvmfs:ro"], "user_group": "0:0"}, FACTS)
    assert legacy_keys.changed_meanings(config) == []
