"""Unit tests of plancton/metrics/history.py: the per-minute CPU history that the owner's page charts."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.metrics.history import MAX_MINUTES, HistoryError, history_path, read_history

cores = st.floats(min_value=0, max_value=512, allow_nan=False)
minutes = st.lists(st.tuples(st.integers(0, 2**31).map(lambda n: n * 60.0), cores, cores), max_size=2 * MAX_MINUTES)


def write(folder: Path, data: object) -> None:
    Path(history_path(str(folder))).write_text(json.dumps(data), encoding="utf-8")


def test_no_file_is_no_history(tmp_path: Path) -> None:
    assert read_history(str(tmp_path)) == []


@given(written=minutes)
def test_the_newest_day_of_minutes_is_read_oldest_first(tmp_path_factory: pytest.TempPathFactory, written) -> None:
    folder = tmp_path_factory.mktemp("state")
    write(folder, {"version": 1, "minutes": [list(minute) for minute in written]})
    read = read_history(str(folder))
    assert read == sorted(written)[-MAX_MINUTES:]
    assert len(read) == min(len(written), MAX_MINUTES)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not valid JSON"),
        ('{"version": 2, "minutes": []}', "format version 2, expected 1"),
        ('{"version": 1}', "is not a history of this version ('minutes')"),
        ('{"version": 1, "minutes": [[60, 1.5]]}', "not enough values to unpack"),
        ('{"version": 1, "minutes": [[60, "many", 0]]}', "could not convert string to float"),
        ('{"version": 1, "minutes": [[60, -1, 0]]}', "minute [60, -1, 0]: expected a start and two CPU figures"),
        ('{"version": 1, "minutes": [[60, 1, NaN]]}', "finite and not negative"),
        ("[]", "is not a history of this version"),
    ],
)
def test_a_damaged_file_is_one_line_naming_it_and_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    Path(history_path(str(tmp_path))).write_text(text, encoding="utf-8")
    with pytest.raises(HistoryError) as error:
        read_history(str(tmp_path))
    assert history_path(str(tmp_path)) in str(error.value)
    assert says in str(error.value)
    assert "\n" not in str(error.value)
