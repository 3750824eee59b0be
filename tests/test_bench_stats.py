"""The benchmark's statistics: the distribution-free interval of a median that the owner's
slowdown is judged by, and how a figure shows it."""

import math
import random

from bench.stats import Figure, Stats, median_interval


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
