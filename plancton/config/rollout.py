"""The ``rollout`` key: how a revision spreads over a farm, and how long a node watches it."""

from typing import Any, NamedTuple

from plancton.config import units

_DAY = 86400.0
#: How long a node watches its pilots after taking a revision, unless the revision says.
DEFAULT_WATCH_SECONDS = 600.0
_EXAMPLE = "{window: 2h, watch: 10m}"


class Rollout(NamedTuple):
    """A revision's rollout: the window its nodes take it over (0: all at once), and how long
    each watches its pilots after taking it (seconds)."""

    window: float = 0.0
    watch: float = DEFAULT_WATCH_SECONDS


def parse_rollout(value: Any) -> Rollout:
    """Given the YAML value of ``rollout``, return it.

    Raises:
        ValueError: not a mapping of ``window`` and ``watch``, a duration out of range, or a
            window of zero (which spreads nothing).
    """
    if value is None:
        return Rollout()
    if not isinstance(value, dict) or not set(value) <= {"window", "watch"}:
        raise ValueError(f"expected a mapping of window and watch such as {_EXAMPLE}, got {units.shown(value)}")
    window = units.duration_in_range(0, 7 * _DAY)(value.get("window", 0))
    if "window" in value and window == 0:
        raise ValueError(
            f"a window of zero spreads nothing: give one such as {_EXAMPLE}, or leave window out to take "
            "the revision on every node at once"
        )
    watch = units.duration_in_range(0, _DAY)(value.get("watch", DEFAULT_WATCH_SECONDS))
    return Rollout(window, watch)


def show_rollout(rollout: Rollout) -> dict[str, float]:
    """Return the rollout as ``planctonctl config`` prints it (without a window: at once)."""
    window = {"window": rollout.window} if rollout.window else {}
    return {**window, "watch": rollout.watch}
