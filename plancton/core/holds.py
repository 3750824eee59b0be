"""Why pilots are held back: the fixed set of holds the policy decides, beside its sentences."""

import enum
from typing import NamedTuple


class Hold(enum.Enum):
    """What keeps pilots from starting, or pauses, stops or kills running ones.

    The values are the labels metrics give them (``plancton_hold_reason{reason}``): stable
    words, where the policy's sentences, meant for people, carry figures.
    """

    MODE = "mode"  # draining, drain-stop or force-stop
    DEADLINE = "deadline"  # a drain deadline: too near for a pilot's drain_min_runtime, or passed
    MEMORY = "memory"  # available memory below mem_floor, or memory pressure
    OWNER_BUSY = "owner_busy"  # the owner's CPU use (pilots excluded) or CPU pressure
    INPUT = "input"  # a keyboard used within input_idle, or nothing can tell
    BATTERY = "battery"  # on battery without run_on_battery
    RUN_HOURS = "run_hours"  # outside run_hours
    SNOOZE = "snooze"  # the owner snoozed lending (planctonctl snooze)
    GRACE_SPAWN = "grace_spawn"  # the owner idle again for less than grace_spawn
    PAUSED_FIRST = "paused_first"  # paused pilots resume before new ones start
    START_BACKOFF = "start_backoff"  # starts failed lately
    START_RATE = "start_rate"  # max_starts_per_minute reached
    POOL_FULL = "pool_full"  # max_docks pilots are alive


class Reason(NamedTuple):
    """One reason the owner counts as present: its hold, and a sentence for people."""

    hold: Hold
    text: str


def in_order(holds: set[Hold] | frozenset[Hold]) -> tuple[Hold, ...]:
    """Given some holds, return them in the order :class:`Hold` declares them."""
    return tuple(hold for hold in Hold if hold in holds)
