"""Unit tests of the configuration: every key's validation, the corpus of broken files, the
shipped etc/config.yaml, and what the daemon uses to notice a changed file.
"""

import dataclasses
import datetime
import glob
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from plancton.config import files, schema
from plancton.config.loader import load, parse
from plancton.config.rollout import Rollout
from plancton.config.schema import KEYS, Config, HostFacts
from plancton.engines.spec import container_spec
from plancton.errors import ConfigError

GIB = 1024**3
FACTS = HostFacts(ncpus=8, ram_bytes=16 * GIB, swap_bytes=0)
REPOSITORY = Path(__file__).resolve().parent.parent
BROKEN = sorted(glob.glob(str(REPOSITORY / "tests" / "data" / "broken" / "*.yaml")))

#: For every key: values accepted (raw YAML value, resulting value) and values refused (raw,
#: a fragment of the message). A key added to Config without cases here fails the test below.
CASES: dict[str, tuple[list[tuple[Any, Any]], list[tuple[Any, str]]]] = {
    "instance": (
        [("farm_1", "farm_1")],
        [
            ("Farm", 'got "Farm"'),
            ("1farm", "expected text such as"),
            ("my-farm", 'up to 30 lowercase letters, digits or _), got "my-farm"'),
            ("a" * 40, "expected text"),
            (5, "got 5"),
        ],
    ),
    "updateconfig": (
        [("5m", 300.0), (0.5, 0.5), ("1d", 86400.0)],
        [(0, "expected seconds from 0.1 to 86400, got 0"), ("2d", 'got "2d"'), ("soon", "expected seconds such as")],
    ),
    "main_sleep": (
        [("2s", 2.0), (0.1, 0.1), ("1h", 3600.0)],
        [(0, "expected seconds from 0.1 to 3600"), ("2h", 'got "2h"'), (-1, "not negative")],
    ),
    "log_level": (
        [("DEBUG", "DEBUG"), ("ERROR", "ERROR")],
        [("debug", "expected one of DEBUG, INFO, WARNING, ERROR"), ("TRACE", 'got "TRACE"'), (10, "got 10")],
    ),
    "influxdb_url": (
        [
            ("http://localhost:8086#plancton", ("http://localhost:8086#plancton",)),
            (["https://u:p@a:1#d", "insecure_https://b:2#e"], ("https://u:p@a:1#d", "insecure_https://b:2#e")),
            (None, ()),
        ],
        [
            ("ftp://host:8086#db", 'got "ftp://host:8086#db"'),
            ("http://host#db", "expected a URL such as"),
            ("http://host:8086", "expected a URL such as"),
            ("http://host:70000#db", 'got "http://host:70000#db"'),
            ({"url": "x"}, "got dict"),
            ([5], "got 5"),
        ],
    ),
    "influxdb_legacy_series": (
        [(True, True), (False, False)],
        [("yes", 'expected true or false, got "yes"')],
    ),
    "legacy_pilots": (
        [("keep", "keep"), ("remove", "remove")],
        [("adopt", 'expected one of keep, remove, got "adopt"'), (True, "got true")],
    ),
    "metrics_listen": (
        [
            ("127.0.0.1:9810", "127.0.0.1:9810"),
            (9810, "127.0.0.1:9810"),
            (":9810", "127.0.0.1:9810"),
            ("localhost:9810", "127.0.0.1:9810"),
            ("0.0.0.0:9810", "0.0.0.0:9810"),
            ("[::]:9810", "[::]:9810"),
            (None, None),
        ],
        [
            ("node1:9810", "'node1' is not an IP address"),
            ("127.0.0.1:99999", "expected a port from 1 to 65535"),
            ("::1:9810", "IPv6 address goes in brackets"),
            ("127.0.0.1", "write HOST:PORT such as"),
            ([9810], "got list"),
        ],
    ),
    "metrics_textfile": (
        [("/var/lib/node-exporter/plancton.prom", "/var/lib/node-exporter/plancton.prom"), (None, None)],
        [("plancton.prom", "expected an absolute path ending in .prom"), ("/tmp/plancton.txt", "ending in .prom")],
    ),
    "max_docks": (
        [(3, "3"), (0, "0"), ("ncpus - 2", "ncpus - 2"), ("min(ncpus, ram_bytes // max_dock_mem)", "min(")],
        [
            (-1, "expected a whole number from 0 to 10000, got -1"),
            (True, "expected a whole number or an expression"),
            (2.5, "got 2.5"),
            ("ncpus ** 2", "the operator ** is not allowed"),
            ("__import__('os')", "only the functions min, max, floor, ceil may be called"),
            ("ncpus * 10000", "expected at most 10000 pilots"),
            ("ncpus / (ncpus - 8)", "division by zero"),
        ],
    ),
    "docks_per_loop": (
        [(1, 1), (1000, 1000)],
        [(0, "expected a whole number from 1 to 1000, got 0"), (1001, "got 1001"), (2.5, "got 2.5"), ("4", 'got "4"')],
    ),
    "max_starts_per_minute": (
        [(1, 1), (600, 600)],
        [(0, "expected a whole number from 1 to 10000"), (10001, "got 10001")],
    ),
    "max_ttl": (
        [("12h", 43200.0), (1, 1.0), ("365d", 365 * 86400.0)],
        [(0, "expected seconds from 1 to"), ("400d", 'got "400d"'), (-5, "not negative")],
    ),
    "vacate_time": (
        [(0, 0.0), ("1m", 60.0)],
        [("2h", "expected seconds from 0 to 3600"), (-1, "not negative"), ("later", 'got "later"')],
    ),
    "owner_busy_percent": (
        [(100, 100.0), (41, 41.0), (55.5, 55.5)],
        [(0, "expected a number from 1 to 100, got 0"), (101, "got 101"), ("40%", 'got "40%"')],
    ),
    "owner_idle_percent": (
        [(0, 0.0), (39.5, 39.5)],
        [(-1, "expected a number from 0 to 99"), (100, "got 100"), (40, "expected less than owner_busy_percent (40)")],
    ),
    "cpu_pressure_percent": (
        [(1, 1.0), (100, 100.0)],
        [(0, "expected a number from 1 to 100"), (101, "got 101")],
    ),
    "pause_delay": (
        [(0, 0.0), ("30s", 30.0)],
        [(-1, "not negative"), ("x", 'expected seconds such as 30 or "5m", got "x"')],
    ),
    "grace_kill": (
        [(0, 0.0), ("2m", 120.0)],
        [("400d", "expected seconds from 0 to"), (-1, "not negative")],
    ),
    "grace_spawn": (
        [(0, 0.0), ("1h", 3600.0)],
        [(-1, "not negative"), (True, "got true")],
    ),
    "mem_floor": (
        [(0, 0), ("1G", GIB), ("512MiB", 512 * 1024**2), ("1GB", 10**9)],
        [
            ("lots", 'expected a size such as 2000000000 or "2G", got "lots"'),
            (-1, "not negative"),
            ("2000P", "at most"),
        ],
    ),
    "memory_pressure_percent": (
        [(1, 1.0), (100, 100.0)],
        [(0, "expected a number from 1 to 100"), (150, "got 150")],
    ),
    "input_idle": (
        [(0, 0.0), ("5m", 300.0)],
        [(-1, "not negative"), ("idle", "expected seconds such as")],
    ),
    "run_on_battery": ([(True, True), (False, False)], [("yes", 'got "yes"')]),
    "lend_cores": ([(0, 0.0), (1, 1.0), (2.5, 2.5)], [(-1, "expected a number from 0 to 1024"), ("all", 'got "all"')]),
    "run_hours": (
        [(None, ()), ([], ())],
        [
            (["Mon-Fri 18:00-8"], 'expected a time span such as 18:00-08:00 in "Mon-Fri 18:00-8", got "18:00-8"'),
            (["Mon-Fri 18:00-25:00"], "got 25:00"),
            (5, "got int"),
        ],
    ),
    "docker_image": (
        [
            ("busybox:latest", "busybox:latest"),
            ("registry.example.org:5000/alice/pilot:v1", "registry.example.org:5000/alice/pilot:v1"),
            ("busybox@sha256:" + "a" * 64, "busybox@sha256:" + "a" * 64),
        ],
        [("Busybox", 'got "Busybox"'), ("busy box", "expected text such as"), ("", 'got ""'), (5, "got 5")],
    ),
    "pull_policy": (
        [("always", "always"), ("never", "never")],
        [("sometimes", "expected one of always, if-not-present, never"), (True, "got true")],
    ),
    "image_expiration": (
        [("1d", 86400.0), (60, 60.0)],
        [(0, "expected seconds from 1 to"), (-1, "not negative")],
    ),
    "spare_pilot": ([(True, True), (False, False)], [("no", 'expected true or false, got "no"')]),
    "replace_on_image_change": (
        [(True, True), (False, False)],
        [("yes", 'expected true or false, got "yes"'), (1, "got 1")],
    ),
    "docker_cmd": (
        [("sleep 30", ("sleep", "30")), (["sh", "-c", "echo a b"], ("sh", "-c", "echo a b"))],
        [("", 'expected a command such as "sleep 60"'), ([], "got []"), (5, "got 5"), ("echo 'x", "No closing")],
    ),
    "environment": (
        [({"A": 1, "B": "x"}, (("A", "1"), ("B", "x"))), (None, ())],
        [(["A=1"], "expected a mapping"), ({"1A": "x"}, "expected variable names"), ({"A": [1]}, "plain value")],
    ),
    "user_group": (
        [("1000:1000", "1000:1000"), ("nobody", "nobody"), (None, None), ("", None)],
        [
            ("1000:1000:1000", 'expected text such as "1000:1000"'),
            (60050, "in quotes, got the number 60050"),
            ("a b", 'got "a b"'),
        ],
    ),
    "cpus_per_dock": (
        [(0.5, 0.5), (2, 2.0)],
        [(0, "expected a number from 0.01 to 1024, got 0"), (2000, "got 2000"), ("1 cpu", 'got "1 cpu"')],
    ),
    "max_dock_mem": (
        [("2G", 2 * GIB), (0, 0), ("6M", 6 * 1024**2), (3000000000, 3000000000)],
        [
            ("lots", 'max_dock_mem: expected a size such as 2000000000 or "2G", got "lots"'),
            ("1M", "expected at least 6M (Docker's minimum) or 0 for no cap"),
            (-1, "not negative"),
        ],
    ),
    "max_dock_swap": (
        [("1G", GIB), (0, 0)],
        [("-1G", 'got "-1G"'), ("x", "expected a size")],
    ),
    "pids_limit": (
        [(16, 16), (4096, 4096)],
        [(15, "expected a whole number from 16 to 4194304"), (1.5, "got 1.5")],
    ),
    "ulimits": (
        [({"nofile": 1024}, (("nofile", 1024, 1024),)), ({"nproc": "10:20"}, (("nproc", 10, 20),)), (None, ())],
        [({"nofiles": 1}, "unknown limit 'nofiles'"), ({"nofile": "9:3"}, "above the hard limit"), ([1], "mapping")],
    ),
    "engine_url": (
        [("unix:///run/podman/podman.sock", "unix:///run/podman/podman.sock"), ("tcp://h:2376", "tcp://h:2376")],
        [("/run/podman/podman.sock", "such as unix:///run/podman/podman.sock"), ("unix:///a b", 'got "unix:///a b"')],
    ),
    "network_mode": (
        [("host", "host"), ("none", "none"), ("container:abc", "container:abc"), ("my-net", "my-net")],
        [("two words", 'got "two words"'), (5, "got 5")],
    ),
    "binds": (
        [
            ("/cvmfs:/cvmfs", ("/cvmfs:/cvmfs",)),
            (["/a:/b:rw", "/c:/d:ro,z"], ("/a:/b:rw", "/c:/d:ro,z")),
            ("/cvmfs:/cvmfs:rw,shared,Z", ("/cvmfs:/cvmfs:rw,shared,Z",)),
            (["/a:/b:rslave", "/c:/d:Z,rprivate,ro"], ("/a:/b:rslave", "/c:/d:Z,rprivate,ro")),
        ],
        [
            ("/cvmfs", 'expected text such as "/cvmfs:/cvmfs", got "/cvmfs"'),
            ("/a:/b:rw,ro", "expected at most one of ro, rw, got rw,ro"),
            ("/a:/b:shared,slave", "expected at most one of shared, rshared"),
            ("/a:/b:rw,sharde", 'got "sharde" in "/a:/b:rw,sharde"'),
            ("/a:/b:", 'got "" in "/a:/b:"'),
            ("relative:/x", 'got "relative:/x"'),
            ("/:/host", "/ would hand the host to the pilots"),
            ("/var/run/docker.sock:/var/run/docker.sock", "set allow_dangerous_binds: true"),
        ],
    ),
    "allow_dangerous_binds": (
        [(True, True)],
        [("true", 'expected true or false, got "true"')],
    ),
    "devices": (
        [
            ("/dev/fuse", ("/dev/fuse",)),
            (["/dev/fuse:/dev/fuse:rwm"], ("/dev/fuse:/dev/fuse:rwm",)),
            (
                [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rw"}, "/dev/null"],
                ("/dev/fuse:/dev/fuse:rw", "/dev/null"),
            ),
            ({"PathOnHost": "/dev/fuse"}, ("/dev/fuse:/dev/fuse:rwm",)),
        ],
        [
            ("/etc/passwd", 'got "/etc/passwd"'),
            (5, "expected a list of text"),
            ({"PathInContainer": "/dev/fuse"}, "a mapping with PathOnHost"),
            ({"PathOnHost": "/dev/fuse", "Permissions": "rw"}, "fields PathOnHost, PathInContainer"),
            ({"PathOnHost": "/dev/fuse", "CgroupPermissions": "all"}, 'made of r, w and m, got "all"'),
            ({"PathOnHost": "/etc/passwd"}, 'got "/etc/passwd:/etc/passwd:rwm"'),
        ],
    ),
    "capabilities": (
        [
            ("+SYS_ADMIN", ("+SYS_ADMIN",)),
            (["-NET_RAW", "+CAP_SYS_PTRACE"], ("-NET_RAW", "+CAP_SYS_PTRACE")),
            # a bare name adds, as in Plancton 0.6
            (["SYS_ADMIN", "CAP_NET_ADMIN"], ("+SYS_ADMIN", "+CAP_NET_ADMIN")),
        ],
        [("+sys_admin", 'expected text such as "+SYS_ADMIN"'), ("SYS ADMIN", 'got "SYS ADMIN"'), ("+", 'got "+"')],
    ),
    "security_opts": (
        [("apparmor=unconfined", ("apparmor=unconfined",)), ("no-new-privileges", ("no-new-privileges",))],
        [("whatever", 'got "whatever"'), (5, "expected a list of text")],
    ),
    "rollout": (
        [
            ({"window": "2h"}, Rollout(7200.0, 600.0)),
            ({"window": "30m", "watch": "5m"}, Rollout(1800.0, 300.0)),
            ({"watch": 0}, Rollout(0.0, 0.0)),
            (None, Rollout()),
        ],
        [
            ({"window": 0}, "a window of zero spreads nothing"),
            ({"window": "2h", "stages": 3}, "expected a mapping of window and watch"),
            ("2h", "expected a mapping of window and watch"),
            ({"window": "8d"}, "expected"),
        ],
    ),
    "drain_by": (
        [
            ("2026-12-05T18:00:00Z", 1796493600.0),
            ("2026-12-05T19:00:00+01:00", 1796493600.0),
            (datetime.datetime(2026, 12, 5, 18, tzinfo=datetime.UTC), 1796493600.0),
            (1796493600, 1796493600.0),
            (None, None),
        ],
        [
            ("2026-12-05T18:00:00", "add Z for UTC or the offset"),
            (datetime.date(2026, 12, 5), "expected an ISO time with its time zone"),
            ("tomorrow", 'got "tomorrow"'),
            (-5, "got -5"),
            (True, "expected an ISO time"),
        ],
    ),
    "drain_min_runtime": (
        [("10m", 600.0), (0, 0.0), ("2h", 7200.0)],
        [("-1", "expected"), ("8d", "expected")],
    ),
    "docker_privileged": (
        [(True, True), (False, False)],
        [("no", 'expected true or false, got "no"')],
    ),
}


def test_every_key_has_a_type_default_description_and_validation_cases() -> None:
    assert set(CASES) == set(KEYS)
    for name, item in KEYS.items():
        description = item.metadata["description"]
        assert description and "\n" not in description and len(description) < 160, name
        assert item.default is not dataclasses.MISSING, name
        assert item.type is not None, name


@pytest.mark.parametrize(
    ("name", "raw", "expected"), [(name, raw, expected) for name, (good, _) in CASES.items() for raw, expected in good]
)
def test_valid_values_are_accepted(name: str, raw: Any, expected: Any) -> None:
    config, warnings = parse({name: raw}, FACTS)
    value = getattr(config, name)
    assert value.startswith(expected) if name == "max_docks" and expected == "min(" else value == expected
    assert config.from_file == {name}
    assert warnings == []


@pytest.mark.parametrize(
    ("name", "raw", "fragment"), [(name, raw, fragment) for name, (_, bad) in CASES.items() for raw, fragment in bad]
)
def test_invalid_values_name_the_key_and_what_was_expected(name: str, raw: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse({name: raw}, FACTS, source="/etc/plancton/config.yaml")
    assert error.value.problems, name
    assert all(problem.startswith(f"{name}: ") for problem in error.value.problems)
    assert any(fragment in problem for problem in error.value.problems), error.value.problems
    assert str(error.value).startswith("/etc/plancton/config.yaml: ")


FULL_SECURITY_OPTIONS = ["apparmor=unconfined", "apparmor:docker-default", "seccomp=unconfined", "label=disable"]


@pytest.mark.parametrize(
    ("secopt", "security_opts"),
    [
        (["docker-cvmfs"], ("apparmor=docker-cvmfs",)),
        ("docker-allow-ptrace", ("apparmor=docker-allow-ptrace",)),
        (
            ["docker-cvmfs", "seccomp=/etc/docker/seccomp.json"],
            ("apparmor=docker-cvmfs", "seccomp=/etc/docker/seccomp.json"),
        ),
        ([*FULL_SECURITY_OPTIONS, "no-new-privileges"], (*FULL_SECURITY_OPTIONS, "no-new-privileges")),
    ],
)
def test_a_bare_name_under_the_older_secopt_is_that_apparmor_profile(
    secopt: Any, security_opts: tuple[str, ...]
) -> None:
    """Releases before 0.6 read secopt as AppArmor profile names; full options pass as they are."""
    config, warnings = parse({"secopt": secopt}, FACTS, source="old.yaml")
    assert config.security_opts == security_opts
    assert container_spec(config, "/plancton", "node1", "abcd", 0.0).host_config["security_opt"] == [
        "no-new-privileges:true",
        *security_opts,
    ]
    assert warnings == ["old.yaml: secopt: read as security_opts, its name since Plancton 0.6; rename it"]


def test_a_bare_name_under_security_opts_is_still_refused() -> None:
    """Under today's key, and for a name no profile has, behaviour is unchanged."""
    with pytest.raises(ConfigError) as error:
        parse({"security_opts": ["docker-cvmfs"]}, FACTS)
    assert error.value.problems == ['security_opts: expected text such as "apparmor=my-profile", got "docker-cvmfs"']
    with pytest.raises(ConfigError) as error:
        parse({"secopt": ["docker cvmfs"]}, FACTS)
    assert error.value.problems[0] == (
        'secopt (read as security_opts): expected text such as "apparmor=my-profile", got "docker cvmfs"'
    )


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("max_dock_mem: lots\ndocks_per_loop: 0\nmain_sleep: never\nmax_tll: 5\ndocker_cmd: sleep 5\n")
    with pytest.raises(ConfigError) as error:
        load(str(path), FACTS)
    assert error.value.problems == [
        'max_dock_mem: expected a size such as 2000000000 or "2G", got "lots"',
        "docks_per_loop: expected a whole number from 1 to 1000, got 0",
        'main_sleep: expected seconds such as 30 or "5m", got "never"',
        'unknown key "max_tll" ignored (did you mean "max_ttl"?)',
    ]
    message = error.value.describe()
    assert message.startswith(f"{path}: 4 problems:")
    assert '  - max_dock_mem: expected a size such as 2000000000 or "2G", got "lots"' in message.splitlines()


def test_unknown_keys_are_warnings_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("max_dock: 2\ndocker_imgae: busybox:latest\ncompletely_different: 1\n42: x\n")
    config, warnings = load(str(path), FACTS)
    assert config.from_file == frozenset()
    assert warnings == [
        f'{path}: unknown key "max_dock" ignored (did you mean "max_docks"?)',
        f'{path}: unknown key "docker_imgae" ignored (did you mean "docker_image"?)',
        f'{path}: unknown key "completely_different" ignored',
        f"{path}: unknown key 42 ignored",
    ]


def test_a_missing_or_empty_file_means_defaults(tmp_path: Path) -> None:
    missing, _ = load(str(tmp_path / "absent.yaml"), FACTS)
    assert missing.revision == schema.DEFAULT_REVISION
    for content in ("", "\n\n", "# only comments\n", "---\n"):
        path = tmp_path / "config.yaml"
        path.write_text(content)
        config, warnings = load(str(path), FACTS)
        assert dataclasses.replace(config, source="", revision="") == dataclasses.replace(
            missing, source="", revision=""
        )
        assert warnings == []
    assert missing.docker_image == "busybox:latest" and missing.max_dock_mem == 2 * GIB
    assert missing.pool_size == 6  # max(1, ncpus - 2) with 8 CPUs


def test_a_valid_file_gives_its_values_and_a_content_revision(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("max_docks: ncpus // 2\nmax_dock_mem: 1.5G\ndocker_cmd: [sh, -c, 'sleep 5']\n")
    config, _ = load(str(path), FACTS)
    assert (config.pool_size, config.max_dock_mem, config.docker_cmd) == (4, 3 * GIB // 2, ("sh", "-c", "sleep 5"))
    assert config.source == str(path)
    assert re.fullmatch(r"[0-9a-f]{12}", config.revision)
    path.write_text("max_docks: ncpus // 2\nmax_dock_mem: 1.5G\ndocker_cmd: [sh, -c, 'sleep 6']\n")
    assert load(str(path), FACTS)[0].revision != config.revision


def _expectations(path: str) -> list[str]:
    with open(path, "rb") as handle:
        lines = handle.read().decode("utf-8").splitlines()
    return [line.removeprefix("# expect: ") for line in lines if line.startswith("# expect: ")]


@pytest.mark.parametrize("path", BROKEN, ids=[os.path.basename(path) for path in BROKEN])
def test_broken_files_are_errors_naming_the_file_and_the_problem(path: str) -> None:
    expected = _expectations(path)
    assert expected, f"{path} says what it expects in '# expect: ' lines"
    with pytest.raises(ConfigError) as error:
        load(path, FACTS)
    message = error.value.describe()
    assert message.startswith(f"{path}: ")
    for fragment in expected:
        assert fragment in message
    assert "s3cret" not in message
    assert not os.path.exists("/tmp/plancton-yaml-must-not-run")
    assert not os.path.exists("/tmp/plancton-expression-must-not-run")


YAML_CHARACTERS = "abn:-[]{}!&*#|>'\"%@`,?~ \n\t0123456789.eE+_/"


@settings(max_examples=300)
@given(st.text(alphabet=YAML_CHARACTERS, max_size=80) | st.binary(max_size=80))
def test_any_content_gives_a_config_or_a_config_error(content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        config, _ = parse(files.parse_yaml(data, "fuzz.yaml"), FACTS, source="fuzz.yaml")
    except ConfigError as error:
        assert error.problems and error.source == "fuzz.yaml"
    else:
        assert isinstance(config, Config)


@settings(max_examples=500)
@given(st.sampled_from(list(KEYS)), st.text(alphabet=YAML_CHARACTERS, max_size=40))
def test_any_value_of_any_key_gives_a_config_or_an_error_naming_the_key(name: str, value: str) -> None:
    try:
        raw = files.parse_yaml(f"{name}: {value}\n".encode(), "fuzz.yaml")
        parse(raw, FACTS, source="fuzz.yaml")
    except ConfigError as error:
        assert error.problems
        assert error.problems[0].startswith(("invalid YAML", "expected a mapping", f"{name}: ", "owner_idle_percent: "))


def _load_error(path: Path | str) -> str:
    with pytest.raises(ConfigError) as error:
        load(str(path), FACTS)
    return error.value.describe()


def test_a_huge_file_is_refused_without_being_read(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with open(path, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: 50 MB of nothing on disk
    assert _load_error(path) == f"{path}: is 52428800 bytes; a configuration is at most {files.MAX_FILE_BYTES}"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").mkdir()
    assert _load_error(tmp_path / "config.yaml").endswith("is a directory; expected a YAML file")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    os.mkfifo(path)
    assert "is not a regular file" in _load_error(path)


def test_a_broken_symbolic_link_is_an_error_not_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.symlink_to(tmp_path / "gone.yaml")
    assert "is a symbolic link to a file that does not exist" in _load_error(path)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"docker_image: caf\xe9\n")
    assert _load_error(path) == f"{path}: is not UTF-8 text (byte 18)"


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("max_docks: " + "[" * 100000)
    assert "invalid YAML" in _load_error(path)


def _documented_keys() -> dict[str, tuple[str, str]]:
    """Return, for each key documented in etc/config.yaml, its commented value and description."""
    documented: dict[str, tuple[str, str]] = {}
    comments: list[str] = []
    for line in (REPOSITORY / "etc" / "config.yaml").read_text().splitlines():
        entry = re.fullmatch(r"#(\w+): (.*)", line)
        if entry:
            assert entry.group(1) not in documented, f"{entry.group(1)} documented twice"
            documented[entry.group(1)] = (entry.group(2), " ".join(comments))
        comments = [*comments, line.removeprefix("# ")] if line.startswith("# ") else []
    return documented


def test_the_shipped_file_documents_every_key_with_its_default() -> None:
    documented = _documented_keys()
    assert list(documented) == list(KEYS)
    uncommented = yaml.safe_load("\n".join(f"{name}: {value}" for name, (value, _) in documented.items()))
    config, warnings = parse(uncommented, FACTS)
    assert warnings == []
    assert dataclasses.replace(config, from_file=frozenset(), source="defaults") == Config(pool_size=config.pool_size)
    for name, (_, comment) in documented.items():
        assert comment.startswith(KEYS[name].metadata["description"]), name


def test_the_shipped_file_as_is_gives_the_defaults() -> None:
    config, warnings = load(str(REPOSITORY / "etc" / "config.yaml"), FACTS)
    assert warnings == [] and config.from_file == frozenset()


def test_the_fingerprint_follows_content_even_with_the_same_time_and_size(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert files.fingerprint(str(path)) is None
    path.write_text("max_docks: 1\n")
    first = files.fingerprint(str(path))
    assert first is not None and first == files.fingerprint(str(path))
    path.write_text("max_docks: 2\n")
    os.utime(path, ns=(first.mtime_ns, first.mtime_ns))
    second = files.fingerprint(str(path))
    assert second is not None and (second.mtime_ns, second.size) == (first.mtime_ns, first.size)
    assert second != first
    os.utime(path, ns=(first.mtime_ns + 10**9, first.mtime_ns + 10**9))
    assert files.fingerprint(str(path)) != second


def test_the_fingerprint_of_an_unreadable_path_never_raises(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").mkdir()
    assert files.fingerprint(str(tmp_path / "config.yaml")) is not None


def test_a_file_written_just_now_is_settling(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("max_docks: 1\n")
    now = time.time()
    current = files.fingerprint(str(path))
    assert files.settling(current, now)
    assert not files.settling(current, now + files.SETTLE_SECONDS + 1)
    # a modification time in the future (a clock set back) does not hold a reload forever
    assert not files.settling(current, now - 3600)
    assert not files.settling(None, now)


def test_lend_cores_below_cpus_per_dock_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as refused:
        parse({"lend_cores": 0.5, "cpus_per_dock": 1}, FACTS)
    assert "lend_cores: expected 0 or at least cpus_per_dock (1)" in str(refused.value)
    assert "lend more, or lower cpus_per_dock" in str(refused.value)
    assert parse({"lend_cores": 0.5, "cpus_per_dock": 0.5}, FACTS)[0].lend_cores == 0.5
