"""The benchmark's statistics: the distribution-free interval of a median that the owner's
slowdown is judged by, how a figure shows it, and the figures of paired ratios."""

import math
import random

import pytest

from bench.stats import Figure, Stats, median_interval, ratio_figure


def test_ten_measurements_give_the_second_and_ninth() -> None:
    # P(X <= 1) = 11/1024 for X ~ Binomial(10, 1/2): ranks 2 and 9 hold the median at 97.9%
    assert median_interval([float(value) for value in range(10, 0, -1)]) == (2.0, 9.0)


def test_twenty_measurements_give_the_sixth_and_fifteenth() -> None:
    assert median_interval([float(value) for value in range(1, 21)]) == (6.0, 15.0)


def test_too_few_measurements_give_no_interval() -> None:
    low, high = median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert math.isnan(low) and math.isnan(high)
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == (1.0, 6.0)


def test_the_interval_holds_the_true_median_at_least_95_percent_of_the_time() -> None:
    generator = random.Random(7)
    held = 0
    trials = 2000
    for _ in range(trials):
        # a skewed population whose median is exactly 1.0
        sample = [math.exp(generator.gauss(0.0, 0.5)) for _ in range(10)]
        low, high = median_interval(sample)
        held += low <= 1.0 <= high
    assert held / trials >= 0.95


def test_stats_carry_the_interval_and_show_it() -> None:
    stats = Stats.paired([1.0 + step / 100 for step in range(10)], [1.0] * 10)
    assert stats.count == 10
    assert stats.interval == (1.01, 1.08)
    assert "95% interval 1.01-1.08" in Figure("owner slowdown (paired)", "x", stats).shown()
    restored = Figure.from_dict(Figure("owner slowdown (paired)", "x", stats).as_dict())
    assert restored.stats == stats


def test_repetitions_not_measured_are_left_out_and_counted() -> None:
    stats = Stats.of([1.0, math.nan, math.nan])
    assert stats.missing == 2 and stats.count == 1 and stats.median == 1.0


def test_a_pair_with_a_zero_or_missing_side_is_not_measured() -> None:
    stats = Stats.paired([150.0, 120.0, math.nan, 30.0], [10.0, 8.0, 10.0, 0.0])
    assert stats.count == 2 and stats.missing == 2 and stats.median == 15.0
    with pytest.raises(ValueError):
        Stats.paired([1.0], [1.0, 2.0])


def test_a_ratio_with_a_target_is_met_only_at_the_target_or_above() -> None:
    met = ratio_figure("ratio", [9.0, 9.4], [10.0, 10.0], 0.9)
    assert met.target == ">= 0.9" and met.met is True and met.unit == "x"
    assert met.stats is not None and met.stats.median == pytest.approx(0.92)
    assert ratio_figure("ratio", [8.0, 8.9], [10.0, 10.0], 0.9).met is False
    assert ratio_figure("ratio", [9.0], [0.0], 0.9).met is False


def test_a_reported_ratio_has_no_target() -> None:
    reported = ratio_figure("ratio", [6.0], [10.0], None, unit="")
    assert reported.target == "" and reported.met is None and reported.unit == ""
    assert reported.stats is not None and reported.stats.median == pytest.approx(0.6)
