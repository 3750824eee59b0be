"""Desktop policy's arithmetic: when the jobs' CPU crosses a line, the figures of each setup and
of the setups side by side, and the startd's configuration file."""

import math

import pytest

from bench.cpu import CpuReading
from bench.desktop_policy import (
    MEASURES,
    SHIPPED_INTERVALS,
    SHORTEST_INTERVALS,
    comparison_figures,
    desktop_config,
    first_time,
    setup_figures,
)


def readings(cores_per_second: list[float], start: float = 100.0) -> list[CpuReading]:
    """Return readings one second apart in which the jobs used the given cores, in turn."""
    found, used = [CpuReading(start, 0.0, 0.0, 0.0)], 0.0
    for second, cores in enumerate(cores_per_second, start=1):
        used += cores
        found.append(CpuReading(start + second, used, used, 0.0))
    return found


def test_the_first_time_under_a_line_ends_the_first_second_below_it() -> None:
    # the jobs burn 2 cores, then 1, then nearly none from the fourth second on
    series = readings([2.0, 2.0, 1.0, 0.05, 0.0])
    assert first_time(series, 100.0, math.inf, 0.1, below=True) == 4.0
    assert first_time(series, 101.5, math.inf, 0.1, below=True) == pytest.approx(2.5)
    assert first_time(series, 100.0, math.inf, 1.5, below=True) == 3.0


def test_the_first_time_over_a_line_ends_the_first_second_above_it() -> None:
    series = readings([0.0, 0.0, 0.5, 1.5, 2.0])
    assert first_time(series, 100.0, math.inf, 1.0, below=False) == 4.0
    # a second that only reaches the line does not cross it
    assert math.isnan(first_time(series, 100.0, math.inf, 2.0, below=False))


def test_a_line_not_crossed_before_the_end_of_the_window_is_not_measured() -> None:
    series = readings([2.0, 2.0, 2.0, 0.0])
    assert math.isnan(first_time(series, 100.0, 103.0, 0.1, below=True))
    assert first_time(series, 100.0, 104.0, 0.1, below=True) == 4.0
    # intervals before the start do not count, even when they crossed
    assert math.isnan(first_time(readings([0.0, 2.0, 2.0]), 101.0, math.inf, 0.1, below=True))


def test_intervals_without_a_reading_of_the_cgroup_never_cross() -> None:
    # before the first pilot the cgroup is not there, and reads as nan
    series = [CpuReading(100.0, math.nan, 0.0, 0.0), CpuReading(101.0, math.nan, 0.0, 0.0)]
    assert math.isnan(first_time(series, 100.0, math.inf, 0.1, below=True))
    assert math.isnan(first_time(series, 100.0, math.inf, 0.1, below=False))


def run_of(jobs_per_minute: float, burst_given_back: float) -> dict[str, float]:
    """Return one setup's measures, with the given throughput and time to give the CPU back."""
    return {
        **dict.fromkeys(MEASURES, 100.0),
        "jobs_per_minute": jobs_per_minute,
        "burst_given_back": burst_given_back,
    }


def test_the_desktop_policy_is_held_to_ten_times_plancton_and_its_throughput() -> None:
    desktop = [run_of(2.0, 150.0), run_of(2.0, 170.0)]
    plancton = [run_of(1.9, 10.0), run_of(2.0, 10.0)]
    reclaim, throughput = comparison_figures("desktop", desktop, plancton)
    assert reclaim.stats is not None and reclaim.stats.median == pytest.approx(16.0)
    assert reclaim.target == ">= 10" and reclaim.met is True
    assert throughput.stats is not None and throughput.stats.median == pytest.approx(0.975)
    assert throughput.target == ">= 0.95" and throughput.met is True
    slow_plancton = [run_of(1.0, 20.0), run_of(1.0, 20.0)]
    reclaim, throughput = comparison_figures("desktop", desktop, slow_plancton)
    assert reclaim.met is False and throughput.met is False


def test_a_desktop_policy_that_never_suspended_is_counted_and_misses_the_ratio() -> None:
    desktop = [run_of(2.0, math.nan)]
    figures = {figure.what: figure for figure in setup_figures("desktop", desktop, [150.0])}
    never = next(figure for what, figure in figures.items() if "never" in what)
    assert never.value == 1
    reclaim, _ = comparison_figures("desktop", desktop, [run_of(2.0, 10.0)])
    assert reclaim.met is False and reclaim.shown() == "not measured"


def test_the_owners_slowdown_is_paired_with_the_owner_alone() -> None:
    runs = [{**run_of(2.0, 10.0), "owner_seconds": 165.0}, {**run_of(2.0, 10.0), "owner_seconds": 240.0}]
    figures = setup_figures("setup", runs, [150.0, 160.0])
    slowdown = next(figure for figure in figures if "slowdown" in figure.what)
    assert slowdown.stats is not None
    assert (slowdown.stats.low, slowdown.stats.high) == pytest.approx((1.1, 1.5))


@pytest.mark.parametrize("intervals", [SHIPPED_INTERVALS, SHORTEST_INTERVALS])
def test_the_startds_configuration_is_the_desktop_policy_on_one_cpu_slots_that_stay(
    intervals: dict[str, int],
) -> None:
    lines = desktop_config(4, "kbd", intervals).splitlines()
    assert "use POLICY : Desktop" in lines
    assert {"NUM_CPUS = 4", "NUM_SLOTS_TYPE_1 = 4", "SLOT_TYPE_1 = cpus=1", "CONSOLE_DEVICES = kbd"} <= set(lines)
    assert {"STARTD.DAEMON_SHUTDOWN = False", "MASTER.DAEMON_SHUTDOWN = False"} <= set(lines)
    assert {f"{name} = {value}" for name, value in intervals.items()} <= set(lines)
    # the policy's own START, SUSPEND and CONTINUE are the template's: the file sets none
    assert not any(line.split(" ")[0] in ("START", "SUSPEND", "CONTINUE", "PREEMPT") for line in lines)
