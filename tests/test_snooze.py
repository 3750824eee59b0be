"""``planctonctl snooze``: the snooze file it leaves for the daemon, and its errors."""

import time
from pathlib import Path

import pytest

from plancton.cli import planctonctl
from plancton.control.modefiles import read_snooze


def run(tmp_path: Path, *words: str) -> int:
    folders = ["--user", "--confdir", str(tmp_path / "conf"), "--rundir", str(tmp_path / "run")]
    folders += ["--logdir", str(tmp_path / "log")]
    return planctonctl.main([*folders, "--statedir", str(tmp_path / "state"), *words])


def test_snooze_defaults_to_an_hour_from_now(tmp_path, capsys):
    before = time.time()
    assert run(tmp_path, "snooze") == 0
    until = read_snooze(str(tmp_path / "run"))
    assert until is not None
    assert before + 3600 <= until <= time.time() + 3600
    assert "applies when it starts" in capsys.readouterr().out


def test_a_second_snooze_sets_a_new_end_and_cancel_removes_it(tmp_path, capsys):
    assert run(tmp_path, "snooze", "2h") == 0
    assert run(tmp_path, "snooze", "10m") == 0
    until = read_snooze(str(tmp_path / "run"))
    assert until is not None
    assert until <= time.time() + 600
    assert run(tmp_path, "snooze", "--cancel") == 0
    assert read_snooze(str(tmp_path / "run")) is None
    assert "snooze cancelled" in capsys.readouterr().out
    assert run(tmp_path, "snooze", "--cancel") == 0
    assert "no snooze was set" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "says"), [("0", "above zero"), ("8d", "at most 7d"), ("soon", "expected seconds")])
def test_a_snooze_that_makes_no_sense_is_refused_and_nothing_is_written(tmp_path, capsys, text, says):
    assert run(tmp_path, "snooze", text) == 1
    assert says in capsys.readouterr().err
    assert read_snooze(str(tmp_path / "run")) is None
