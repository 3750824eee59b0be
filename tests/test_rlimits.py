"""The hard resource limits of a process, read from /proc."""

import os

from plancton.platform.rlimits import own_hard_limits, process_hard_limits


def test_hard_limits_of_this_process_read_alike_from_proc() -> None:
    assert process_hard_limits(0) == {}
    assert process_hard_limits(os.getpid()) == own_hard_limits()
