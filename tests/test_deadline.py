"""Drain deadlines as typed on the command line (the configuration's are in test_config)."""

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.config.deadline import parse_deadline_text, shown

NOW = 1_796_486_400.0  # 2026-12-05T16:00:00Z


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200), ("90m", 5400), ("5400", 5400), ("1d", 86400)])
def test_a_duration_counts_from_now(text: str, seconds: float) -> None:
    assert parse_deadline_text(text, NOW) == NOW + seconds


def test_a_time_with_its_zone_is_that_moment_and_one_without_is_local_time() -> None:
    assert parse_deadline_text("2026-12-05T18:00:00Z", NOW) == NOW + 7200
    assert parse_deadline_text("2026-12-05T19:00+01:00", NOW) == NOW + 7200
    local = datetime.datetime(2026, 12, 5, 18, 30).timestamp()
    if local > NOW:
        assert parse_deadline_text("2026-12-05T18:30", NOW) == local
        assert parse_deadline_text("2026-12-05 18:30", NOW) == local


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-12-05T15:00:00Z", '"2026-12-05T15:00:00Z" is not ahead of now (2026-12-05T16:00:00Z); give a later'),
        ("0", "is not ahead of now"),
        ("soon", 'expected 2h, 90m, or a time such as 2026-12-05T18:00 (local) or 2026-12-05T18:00:00Z, got "soon"'),
        ("2026-12-05", "expected 2h, 90m"),
        ("-2h", "expected 2h, 90m"),
    ],
)
def test_a_deadline_that_makes_no_sense_says_what_to_give(text: str, says: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_deadline_text(text, NOW)
    assert says in str(raised.value)


@given(st.floats(1, 10 * 365 * 86400))
def test_a_deadline_is_always_after_now(seconds: float) -> None:
    assert parse_deadline_text(f"{seconds:.3f}", NOW) > NOW


def test_deadlines_are_shown_in_utc() -> None:
    assert shown(NOW) == "2026-12-05T16:00:00Z"
