"""The benchmark's CPU accounting: the CPU the rest of the host used while the owner ran."""

import math

from bench.cpu import CpuReading, other_seconds_between


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
