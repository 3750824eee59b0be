"""The HTCondor benchmark's arithmetic: the time a single-shot pilot loses per change of pilot."""

import pytest

from bench.htcondor import WORKERS, time_lost_per_change


def test_legs_of_equal_pace_lose_nothing() -> None:
    assert time_lost_per_change(6 * WORKERS, 9.5, 9.5) == 0.0


def test_the_time_lost_is_shared_among_the_changes_on_each_node() -> None:
    # 12 jobs on 2 nodes: 6 after one another on each, 5 changes of pilot; 60 s against 110 s
    assert WORKERS == 2
    assert time_lost_per_change(12, 12 * 60 / 110, 12 * 60 / 60) == pytest.approx(10.0)
    # 4 jobs: one change on each node, 120 s against 140 s
    assert time_lost_per_change(4, 4 * 60 / 140, 4 * 60 / 120) == pytest.approx(20.0)
