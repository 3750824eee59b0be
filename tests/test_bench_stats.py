"""The benchmark's statistics: the distribution-free interval of a median that the owner's
slowdown is judged by, and the CPU the rest of the host used while the owner ran."""

import math
import random

import pytest

from bench.cpu import CpuReading, other_seconds_between
from bench.reclaim import own_share_percent
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


def test_the_rest_of_the_host_is_what_neither_pilots_nor_owner_used() -> None:
    # time, pilots' cgroup (nan: no cgroup yet or any more), whole host busy, owner
    readings = [
        CpuReading(0.0, math.nan, 100.0, 0.0),
        CpuReading(1.0, 5.0, 102.5, 1.5),  # the pilots' cgroup appears: its first second is unknown
        CpuReading(2.0, 5.5, 105.0, 3.5),  # pilots 0.5, owner 2.0, host 2.5: nothing else
        CpuReading(3.0, 5.5, 107.0, 5.0),  # pilots 0, owner 1.5, host 2.0: 0.5 for the rest
        CpuReading(4.0, math.nan, 108.0, 5.5),  # the cgroup went away with its last pilot
    ]
    assert other_seconds_between(readings, 0.5, 3.5) == 0.5  # from the 2nd reading to the 4th
    assert other_seconds_between(readings, 0.0, 4.0) == (8.0 - 5.5) - 0.5
    assert math.isnan(other_seconds_between(readings, 3.5, 4.5))  # a single reading


def test_the_own_share_is_the_pilots_and_the_extra_rest_of_the_host_over_the_owners_cpu() -> None:
    # pair 1: pilots 0.02 s, the rest of the host 0.30 s against 0.12 s alone, owner 16 s
    # pair 2: the rest of the host took less than alone: the noise may make a share negative
    shares = own_share_percent([0.02, 0.0], [0.30, 0.10], [0.12, 0.14], [16.0, 8.0])
    assert shares == pytest.approx([100 * 0.20 / 16.0, 100 * -0.04 / 8.0])
