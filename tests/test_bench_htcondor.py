"""The HTCondor benchmark's arithmetic: the time a single-shot pilot loses per change of pilot,
and the ratios of the legs, held to their target or only reported."""

import pytest

from bench.htcondor import TARGET_RATIO, WORKERS, ratio_figure, time_lost_per_change


def test_legs_of_equal_pace_lose_nothing() -> None:
    assert time_lost_per_change(6 * WORKERS, 9.5, 9.5) == 0.0


def test_the_time_lost_is_shared_among_the_changes_on_each_node() -> None:
    # 12 jobs on 2 nodes: 6 after one another on each, 5 changes of pilot; 60 s against 110 s
    assert WORKERS == 2
    assert time_lost_per_change(12, 12 * 60 / 110, 12 * 60 / 60) == pytest.approx(10.0)
    # 4 jobs: one change on each node, 120 s against 140 s
    assert time_lost_per_change(4, 4 * 60 / 140, 4 * 60 / 120) == pytest.approx(20.0)


def test_a_ratio_with_a_target_is_met_only_at_the_target_or_above() -> None:
    met = ratio_figure("ratio", [9.0, 9.4], [10.0, 10.0], target=True)
    assert met.target == f">= {TARGET_RATIO}" and met.met is True
    assert met.stats is not None and met.stats.median == pytest.approx(0.92)
    assert ratio_figure("ratio", [8.0, 8.9], [10.0, 10.0], target=True).met is False


def test_a_reported_ratio_has_no_target() -> None:
    reported = ratio_figure("ratio", [6.0], [10.0], target=False)
    assert reported.target == "" and reported.met is None
    assert reported.stats is not None and reported.stats.median == pytest.approx(0.6)
