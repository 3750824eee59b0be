"""Unit tests of the value parsers: sizes, durations, numbers, text, lists and commands."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.config import units

GIB = 1024**3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (2000000000, 2000000000),
        (2.0e9, 2000000000),
        ("2000000000", 2000000000),
        ("2G", 2 * GIB),
        ("2g", 2 * GIB),
        ("2GiB", 2 * GIB),
        ("2Gi", 2 * GIB),
        ("2GB", 2 * 10**9),
        ("512M", 512 * 1024**2),
        ("512 MiB", 512 * 1024**2),
        ("1.5G", 3 * GIB // 2),
        ("64k", 64 * 1024),
        ("1T", 1024**4),
        ("100B", 100),
        ("2e3", 2000),
        (" 3M ", 3 * 1024**2),
    ],
)
def test_sizes_accept_bytes_and_human_units(value: object, expected: int) -> None:
    assert units.parse_size(value) == expected


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("lots", '"lots"'),
        (-1, "-1"),
        ("-2G", '"-2G"'),
        ("2X", '"2X"'),
        ("G", '"G"'),
        (True, "true"),
        (None, "null"),
        ([2], "[2]"),
        (2.5, "2.5"),
        (float("nan"), "nan"),
        ("1e400", '"1e400"'),
        ("2000P", '"2000P"'),
        (2**70, str(2**70)),
    ],
)
def test_bad_sizes_say_what_was_expected_and_got(value: object, shown: str) -> None:
    with pytest.raises(ValueError, match=r'expected a size such as 2000000000 or "2G"') as error:
        units.parse_size(value)
    assert str(error.value).endswith(f"got {shown}")


def test_size_range_is_enforced_and_named_in_units() -> None:
    parse = units.size_in_range(6 * 1024**2, 4 * GIB)
    assert parse("6M") == 6 * 1024**2
    assert parse("4G") == 4 * GIB
    with pytest.raises(ValueError, match=r'expected a size from 6M to 4G, got "5G"'):
        parse("5G")
    with pytest.raises(ValueError, match="expected a size from 6M to 4G, got 1"):
        parse(1)


@given(st.integers(0, units.MAX_SIZE))
def test_sizes_shown_in_units_read_back_the_same(size: int) -> None:
    assert units.parse_size(units.format_size(size)) == size


def test_format_size_uses_the_largest_whole_unit() -> None:
    assert units.format_size(2 * GIB) == "2G"
    assert units.format_size(512 * 1024**2) == "512M"
    assert units.format_size(1536 * 1024**2) == "1536M"
    assert units.format_size(1000) == "1000"
    assert units.format_size(0) == "0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (30, 30.0), (0.5, 0.5), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0), ("1.5 H", 5400)],
)
def test_durations_accept_seconds_and_units(value: object, expected: float) -> None:
    assert units.parse_duration(value) == expected


@pytest.mark.parametrize("value", ["soon", -1, "-5m", "5w", True, None, float("inf"), float("nan"), [30]])
def test_bad_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match='expected seconds such as 30 or "5m"'):
        units.parse_duration(value)


def test_duration_range_is_enforced() -> None:
    parse = units.duration_in_range(0.1, 3600)
    assert parse("1h") == 3600
    with pytest.raises(ValueError, match=r"expected seconds from 0\.1 to 3600, got 0"):
        parse(0)
    with pytest.raises(ValueError, match=r'expected seconds from 0\.1 to 3600, got "2h"'):
        parse("2h")


def test_numbers_in_range() -> None:
    percent = units.number_in_range(1, 100)
    assert percent(40) == 40.0
    assert percent(99.5) == 99.5
    for bad in (0, 101, "40", True, None, math.nan, math.inf):
        with pytest.raises(ValueError, match="expected a number from 1 to 100"):
            percent(bad)
    whole = units.number_in_range(1, 1000, integer=True)
    assert whole(4) == 4
    with pytest.raises(ValueError, match=r"expected a whole number from 1 to 1000, got 2\.5"):
        whole(2.5)


def test_booleans_are_only_yaml_booleans() -> None:
    assert units.parse_bool(True) is True
    assert units.parse_bool(False) is False
    for bad in ("yes", "true", 1, 0, None):
        with pytest.raises(ValueError, match="expected true or false"):
            units.parse_bool(bad)


def test_one_of_and_matching() -> None:
    policy = units.one_of("always", "never")
    assert policy("never") == "never"
    with pytest.raises(ValueError, match='expected one of always, never, got "sometimes"'):
        policy("sometimes")
    with pytest.raises(ValueError, match="expected one of always, never, got"):
        policy(["always"])
    image = units.matching(r"[a-z]+:[a-z0-9]+", "busybox:latest")
    assert image("busybox:v1") == "busybox:v1"
    with pytest.raises(ValueError, match='expected text such as "busybox:latest", got "Busy Box"'):
        image("Busy Box")


def test_lists_take_one_item_or_a_list() -> None:
    devices = units.each(units.matching(r"/dev/\w+", "/dev/fuse"))
    assert devices("/dev/fuse") == ("/dev/fuse",)
    assert devices(["/dev/fuse", "/dev/kvm"]) == ("/dev/fuse", "/dev/kvm")
    assert devices(None) == ()
    with pytest.raises(ValueError, match='got "/etc/passwd"'):
        devices(["/dev/fuse", "/etc/passwd"])
    with pytest.raises(ValueError, match="expected a list of text"):
        devices({"a": 1})


def test_commands_are_split_like_a_shell_but_never_run_by_one() -> None:
    assert units.parse_command("sleep 60") == ("sleep", "60")
    assert units.parse_command("sh -c 'echo $HOME; exit 3'") == ("sh", "-c", "echo $HOME; exit 3")
    assert units.parse_command(["sleep", "60"]) == ("sleep", "60")
    for bad in ("", [], "echo 'unclosed", [1, 2], 60):
        with pytest.raises(ValueError, match='expected a command such as "sleep 60"'):
            units.parse_command(bad)


def test_environment_is_a_mapping_of_names_to_plain_values() -> None:
    assert units.parse_environment({"B": 2, "A": "x", "C": True}) == (("A", "x"), ("B", "2"), ("C", "true"))
    assert units.parse_environment(None) == ()
    with pytest.raises(ValueError, match='expected variable names such as MY_VAR, got "1BAD"'):
        units.parse_environment({"1BAD": "x"})
    with pytest.raises(ValueError, match="expected a plain value for A"):
        units.parse_environment({"A": [1]})
    with pytest.raises(ValueError, match="expected a mapping"):
        units.parse_environment(["A=1"])


def test_a_huge_nested_value_is_shown_cut_short() -> None:
    # what YAML aliases can build from a few lines: 9**9 leaves, all shared
    value: object = ["lol"]
    for _ in range(9):
        value = [value] * 9
    with pytest.raises(ValueError, match="expected a size") as error:
        units.parse_size(value)
    assert len(str(error.value)) < 200
    assert len(units.shown("x" * 10**6)) < 100
