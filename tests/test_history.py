"""Unit tests of plancton/control/history.py: the per-minute CPU history that the owner's page charts."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.control.history import KEEP_MINUTES, history_path, last_day, read_history, write_history

cores = st.floats(min_value=0, max_value=512, allow_nan=False).map(lambda value: round(value, 3))
starts = st.lists(st.integers(0, 2**31), unique=True, max_size=2 * KEEP_MINUTES).map(sorted)


def test_no_file_is_no_history(tmp_path: Path) -> None:
    assert read_history(str(tmp_path)) == []


@given(minute_numbers=starts, owner=cores, pilots=cores)
def test_the_newest_day_of_minutes_is_written_and_read_back_oldest_first(
    tmp_path_factory: pytest.TempPathFactory, minute_numbers: list[int], owner: float, pilots: float
) -> None:
    folder = str(tmp_path_factory.mktemp("state"))
    minutes = [(number * 60.0, owner, pilots) for number in minute_numbers]
    write_history(folder, minutes)
    assert read_history(folder) == minutes[-KEEP_MINUTES:]
    data = json.loads(Path(history_path(folder)).read_text(encoding="utf-8"))
    assert data["version"] == 1 and len(data["minutes"]) == min(len(minutes), KEEP_MINUTES)


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"version": 2, "minutes": [[60, 1, 1]]}',
        '{"version": 1}',
        '{"version": 1, "minutes": [[60, 1.5]]}',
        '{"version": 1, "minutes": [[60, "many", 0]]}',
        "[]",
    ],
)
def test_a_damaged_file_is_an_empty_chart_not_an_error(tmp_path: Path, text: str) -> None:
    Path(history_path(str(tmp_path))).write_text(text, encoding="utf-8")
    assert read_history(str(tmp_path)) == []


def test_minutes_that_are_not_figures_are_left_out(tmp_path: Path) -> None:
    Path(history_path(str(tmp_path))).write_text('{"version": 1, "minutes": [[60, 1, NaN], [120, 0.5, 1.5]]}')
    assert read_history(str(tmp_path)) == [(120.0, 0.5, 1.5)]


def test_the_last_day_is_the_minutes_of_the_last_24_hours() -> None:
    now = 1_000_000.0
    minutes = [(now - back, 1.0, 1.0) for back in (86400.0, 86399.0, 3600.0, 0.0)]
    assert last_day(minutes, now) == minutes[1:]
