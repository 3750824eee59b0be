"""Why pilots are held back, in a few stable words: the policy explains each decision in a
sentence with figures in it (``owner at 85% of host CPU ..., busy 12 s: pausing 2 youngest
pilots``), which suits ``planctonctl status`` but not a metric's label, whose every value is a
series of its own. :func:`hold_reasons` maps those sentences to the fixed set :data:`HOLDS`.
"""

import re
from collections.abc import Iterable

#: Each reason pilots are held, and what in the policy's sentences names it. A hold keeps
#: pilots from starting, or pauses, stops or kills running ones.
_PATTERNS: dict[str, re.Pattern[str]] = {
    "mode": re.compile(r"^force-stop:|^starting none: (draining|drain-stop|force-stop) \("),
    "memory": re.compile(r"below mem_floor|^memory pressure|available memory at mem_floor"),
    "owner_busy": re.compile(r"owner busy|^owner at \S+ of host CPU \(pilots excluded\)(: pausing|, busy)"),
    "input": re.compile(r"keyboard used|when a keyboard was last used"),
    "battery": re.compile(r"on battery"),
    "run_hours": re.compile(r"outside run_hours"),
    "grace_spawn": re.compile(r"^starting none: owner idle again only"),
    "paused_first": re.compile(r"^starting none: paused pilots resume first"),
    "start_backoff": re.compile(r"^starting none: backing off after failed starts"),
    "start_rate": re.compile(r"^start rate at max_starts_per_minute"),
    "pool_full": re.compile(r"^pool full:"),
}
#: Every hold, in the order metrics list them.
HOLDS: tuple[str, ...] = tuple(_PATTERNS)


def hold_reasons(reasons: Iterable[str]) -> frozenset[str]:
    """Given the policy's reasons for one loop, return the holds (values of :data:`HOLDS`)
    they name; sentences that name none (pilots starting, finished pilots removed) add none."""
    return frozenset(hold for reason in reasons for hold, pattern in _PATTERNS.items() if pattern.search(reason))
