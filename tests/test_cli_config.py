"""``planctonctl check-config`` and ``planctonctl config`` as a user runs them (no daemon)."""

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from plancton.config.schema import KEYS
from tests.conftest import Installation, venv_command


@pytest.fixture
def setup(tmp_path: Path) -> Installation:
    """An installation in a temporary folder; these tests never start its daemon."""
    return Installation(root=str(tmp_path), instance="cli")


def test_check_config_accepts_a_valid_file_and_warns_about_unknown_keys(setup: Installation) -> None:
    setup.write_config("max_docks: ncpus\nmax_dock_mem: 1G\ndocker_imgae: busybox:latest\n")
    checked = setup.ctl("check-config")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{setup.config_file}: valid (revision ")
    assert f'warning: {setup.config_file}: unknown key "docker_imgae" ignored (did you mean "docker_image"?)' in (
        checked.stderr
    )


def test_check_config_lists_every_problem_and_exits_1(setup: Installation) -> None:
    setup.write_config("max_dock_mem: lots\nmax_docks: __import__('os').getcwd()\nmain_sleep: -5\n")
    checked = setup.ctl("check-config", setup.config_file)
    assert checked.returncode == 1
    assert checked.stdout == ""
    lines = checked.stderr.splitlines()
    assert lines[0] == f"planctonctl: {setup.config_file}: 3 problems:"
    assert '  - max_dock_mem: expected a size such as 2000000000 or "2G", got "lots"' in lines
    assert any(
        line.startswith("  - max_docks: only the functions min, max, floor, ceil may be called") for line in lines
    )
    assert any(line.startswith("  - main_sleep: expected seconds") for line in lines)


def test_check_config_gives_the_line_and_column_of_bad_yaml(setup: Installation, tmp_path: Path) -> None:
    path = tmp_path / "candidate.yaml"
    path.write_text("max_docks: 2\ndocker_cmd: [sleep, 60\nmain_sleep: 5\n")
    checked = setup.ctl("check-config", str(path))
    assert checked.returncode == 1
    assert checked.stderr.startswith(f"planctonctl: {path}: invalid YAML at line 3, column 11: expected ',' or ']'")


def test_check_config_never_touches_the_daemon(setup: Installation, tmp_path: Path) -> None:
    path = tmp_path / "candidate.yaml"
    path.write_text("max_docks: 1\n")
    assert setup.ctl("check-config", str(path)).returncode == 0
    # no run folder, pidfile, log or state was created
    assert not os.path.exists(setup.rundir)
    assert not os.path.exists(setup.logdir)


def test_check_config_of_a_missing_file(setup: Installation, tmp_path: Path) -> None:
    named = setup.ctl("check-config", str(tmp_path / "absent.yaml"))
    assert (named.returncode, named.stderr) == (1, f"planctonctl: {tmp_path / 'absent.yaml'}: no such file\n")
    # the default file missing means the defaults, which are valid
    default = setup.ctl("check-config")
    assert default.returncode == 0
    assert "no such file, so the defaults apply" in default.stdout


def test_check_config_refuses_a_directory_and_a_huge_file(setup: Installation, tmp_path: Path) -> None:
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    assert (
        setup.ctl("check-config", str(folder)).stderr
        == f"planctonctl: {folder}: is a directory; expected a YAML file\n"
    )
    checked = setup.ctl("check-config", str(huge))
    assert checked.returncode == 1
    assert "is 52428800 bytes; a configuration is at most" in checked.stderr


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's own temporary folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="plancton-cli-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def test_check_config_of_an_unreadable_file(shared_folder: Path) -> None:
    # root reads every file, so the check runs as another user, as a user of the host would
    path = shared_folder / "config.yaml"
    path.write_text("max_docks: 1\n")
    path.chmod(0o600)
    environment = ["env", "HOME=/", *([f"PYTHONPATH={os.environ['PYTHONPATH']}"] if "PYTHONPATH" in os.environ else [])]
    command = ["runuser", "-u", pwd.getpwuid(65534).pw_name, "--", *environment, venv_command("planctonctl")]
    checked = subprocess.run(
        [*command, "check-config", str(path)], capture_output=True, text=True, timeout=120, check=False, cwd="/"
    )
    assert checked.returncode == 1
    assert checked.stderr == (f"planctonctl: {path}: cannot read the file (Permission denied); check its permissions\n")


def _printed(text: str) -> dict[str, tuple[object, str]]:
    """Return, from planctonctl config's output, each key's value and origin."""
    printed = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        entry, _, origin = line.rpartition("  # ")
        printed.update({name: (value, origin) for name, value in yaml.safe_load(entry).items()})
    return printed


def test_config_prints_every_value_and_where_it_comes_from(setup: Installation) -> None:
    setup.write_config("max_dock_mem: 1536M\ninfluxdb_url: https://plancton:s3cret@influx:8086#farm\nmain_sleep: 2\n")
    shown = setup.ctl("config")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"# {setup.config_file} (revision ")
    assert "s3cret" not in shown.stdout
    printed = _printed(shown.stdout)
    assert list(printed) == list(KEYS)
    assert printed["instance"] == ("cli", "config.yaml")
    assert printed["max_dock_mem"] == ("1536M", "config.yaml")
    assert printed["influxdb_url"] == (["https://plancton:****@influx:8086#farm"], "config.yaml")
    assert printed["main_sleep"] == (2, "config.yaml")
    assert printed["max_docks"] == ("max(1, ncpus - 2)", "default")
    assert printed["docker_cmd"] == (["sleep", "60"], "default")
    assert printed["mem_floor"] == ("512M", "default")


def test_the_printed_configuration_is_a_valid_file_giving_the_same_values(setup: Installation, tmp_path: Path) -> None:
    setup.write_config("max_docks: 3\nenvironment: {SITE: torino}\nbinds: /cvmfs:/cvmfs\nuser_group: null\n")
    first = setup.ctl("config")
    copy = tmp_path / "copy.yaml"
    copy.write_text(first.stdout)
    assert setup.ctl("check-config", str(copy)).returncode == 0
    again = Installation(root=str(tmp_path / "again"), instance="cli")
    again.write_config("")
    os.replace(copy, again.config_file)
    second = again.ctl("config")
    assert {name: value for name, (value, _) in _printed(second.stdout).items()} == {
        name: value for name, (value, _) in _printed(first.stdout).items()
    }
    assert {origin for _, origin in _printed(second.stdout).values()} == {"config.yaml"}


def test_config_of_an_invalid_file_exits_1_with_its_problems(setup: Installation) -> None:
    setup.write_config("max_dock_mem: lots\n")
    shown = setup.ctl("config")
    assert shown.returncode == 1
    assert shown.stdout == ""
    assert f'{setup.config_file}: max_dock_mem: expected a size such as 2000000000 or "2G", got "lots"' in shown.stderr
