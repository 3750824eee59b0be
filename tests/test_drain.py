"""Drain with a deadline: ``planctonctl drain --by`` and ``drain_by``, as pilots and users see
them, against a real daemon and a real engine."""

import datetime
import os
import time
from pathlib import Path

import docker
import pytest

from plancton.cli import planctonctl
from plancton.control.modefiles import read_drain_by
from tests.conftest import BOTH_ENGINES, STEADY_POLICY, Installation, wait_until
from tests.support import services

#: Pilots that run long, are stopped within a second, and are not replaced while a deadline
#: is near (drain_min_runtime 1h).
POLICY = STEADY_POLICY + "docker_cmd: sleep 600\nvacate_time: 1\ndrain_min_runtime: 1h\nspare_pilot: false\n"


def run(tmp_path: Path, *words: str) -> int:
    folders = ["--user", "--confdir", str(tmp_path / "conf"), "--rundir", str(tmp_path / "run")]
    folders += ["--logdir", str(tmp_path / "log")]
    return planctonctl.main([*folders, "--statedir", str(tmp_path / "state"), *words])


# -- the command line, without a daemon ------------------------------------------------------


def test_drain_by_keeps_the_deadline_for_the_daemon_and_resume_cancels_it(tmp_path, capsys):
    before = time.time()
    assert run(tmp_path, "drain", "--by", "2h") == 0
    deadline = read_drain_by(str(tmp_path / "run"))
    assert deadline is not None and before + 7200 <= deadline <= time.time() + 7200
    said = capsys.readouterr().out
    assert "drain deadline set: " in said and "planctonctl resume cancels it" in said
    assert "applies when it starts" in said
    assert run(tmp_path, "resume") == 0
    assert read_drain_by(str(tmp_path / "run")) is None
    assert "mode active set; drain deadline cancelled" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2020-01-01T00:00:00Z", "is not ahead of now"),
        ("tomorrow", "expected 2h, 90m, or a time such as"),
    ],
)
def test_a_deadline_in_the_past_or_unreadable_is_one_line_and_nothing_is_kept(tmp_path, capsys, text, says):
    assert run(tmp_path, "drain", "--by", text) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and f"drain --by {text!r}" in error and says in error
    assert read_drain_by(str(tmp_path / "run")) is None


# -- a real daemon and engine ----------------------------------------------------------------


def pilot_ids(api: docker.APIClient, instance: str) -> set[str]:
    return {entry["Id"] for entry in services.instance_containers(api, instance) if entry["State"] == "running"}


def shutdowntime_seen(api: docker.APIClient, container: str) -> str:
    """Return what a pilot reads in $MACHINEFEATURES/shutdowntime ("" when there is none)."""
    code, output = services.in_pilot(api, container, "sh", "-c", 'cat "$MACHINEFEATURES/shutdowntime"')
    return output if code == 0 else ""


@pytest.mark.docker
@BOTH_ENGINES
def test_pilots_see_the_deadline_in_machine_features_and_its_change(
    installation: Installation, engine_api: docker.APIClient
) -> None:
    installation.write_config(POLICY + "max_docks: 1\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: pilot_ids(engine_api, installation.instance), what="a pilot")
    (pilot,) = pilot_ids(engine_api, installation.instance)
    assert services.in_pilot(engine_api, pilot, "sh", "-c", "echo $MACHINEFEATURES") == (0, "/run/machinefeatures")
    assert shutdowntime_seen(engine_api, pilot) == ""
    assert installation.ctl("drain", "--by", "2h").returncode == 0
    first = read_drain_by(installation.rundir)
    assert first is not None
    wait_until(lambda: shutdowntime_seen(engine_api, pilot) == str(int(first)), what="the pilot to see the deadline")
    # the folder is read-only in the pilot
    assert services.in_pilot(engine_api, pilot, "sh", "-c", 'echo 1 > "$MACHINEFEATURES/shutdowntime"')[0] != 0
    assert installation.ctl("drain", "--by", "3h").returncode == 0
    second = read_drain_by(installation.rundir)
    assert second is not None and second > first
    wait_until(lambda: shutdowntime_seen(engine_api, pilot) == str(int(second)), what="the pilot to see the change")
    expected = {"deadline": second, "source": "planctonctl drain --by"}
    wait_until(lambda: installation.status()["drain_by"] == expected, what="status to show the deadline")
    assert "drain deadline " in installation.ctl("status").stdout
    assert installation.ctl("resume").returncode == 0
    wait_until(lambda: shutdowntime_seen(engine_api, pilot) == "", what="the pilot to see the deadline go")
    assert pilot_ids(engine_api, installation.instance) == {pilot}  # the same pilot all along


@pytest.mark.docker
def test_no_pilot_starts_that_the_deadline_would_cut_short(
    installation: Installation, engine_api: docker.APIClient
) -> None:
    installation.write_config(POLICY + "max_docks: 2\n")
    # set before the daemon runs: it applies when it starts
    assert installation.ctl("drain", "--by", "50m").returncode == 0
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: installation.state().loops >= 5, what="five loops")
    assert pilot_ids(engine_api, installation.instance) == set()
    status = installation.status()
    assert "deadline" in status["holds"]
    assert any("less than drain_min_runtime 60 min" in reason for reason in status["why"])
    # a deadline far enough lets pilots start again
    assert installation.ctl("drain", "--by", "2h").returncode == 0
    wait_until(lambda: len(pilot_ids(engine_api, installation.instance)) == 2, what="two pilots")


@pytest.mark.docker
def test_the_farm_wide_deadline_stops_the_pilots_left_when_it_comes(
    installation: Installation, engine_api: docker.APIClient
) -> None:
    installation.write_config(POLICY + "max_docks: 2\n")
    assert installation.ctl("start").returncode == 0
    wait_until(lambda: len(pilot_ids(engine_api, installation.instance)) == 2, what="two pilots")
    deadline = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(seconds=20)
    installation.write_config(POLICY + f"max_docks: 2\ndrain_by: {deadline.isoformat()}\n")
    assert installation.ctl("reload").returncode == 0
    wait_until(lambda: installation.status()["drain_by"], what="the deadline in force")
    assert installation.status()["drain_by"]["source"] == installation.config_file
    wait_until(lambda: not pilot_ids(engine_api, installation.instance), timeout=120, what="the pilots to be stopped")
    assert time.time() >= deadline.timestamp()
    log = installation.log()
    assert log.count("(deadline)") == 2
    loops = installation.state().loops
    wait_until(lambda: installation.state().loops >= loops + 5, what="five more loops")
    assert not services.instance_containers(engine_api, installation.instance)
    text = installation.ctl("status").stdout
    assert "ago: no pilot runs; set by " + installation.config_file in text
    # resume cannot cancel the farm's deadline, and says where it is set
    resumed = installation.ctl("resume").stdout
    assert f"the drain deadline drain_by of {installation.config_file} stays: remove it there" in resumed
    assert os.path.exists(os.path.join(installation.rundir, "machinefeatures", "shutdowntime"))
