"""The pilots' resource limits: the ``ulimits`` key, the default ones, the fix when refused.

A container runtime sets each limit it is given inside the new container; raising a hard
limit above the one the runtime itself runs with needs CAP_SYS_RESOURCE, which containers,
sandboxes and hardened hosts often lack. Podman asks for ``nofile`` and ``nproc`` of about a
million in every container unless told otherwise, so without a lower limit no pilot starts
on such a host. Pilots therefore get, by default, ``nofile`` and ``nproc`` no higher than the
lowest hard limits that Plancton and the engine's own process run with.
"""

import re
from collections.abc import Mapping
from typing import Any

#: The limits the engines accept (Docker's ``--ulimit`` names).
NAMES = (
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
)
#: The limits every pilot gets by default, capped at the hard limits in force.
DEFAULT_CAPPED = ("nofile", "nproc")
_SOFT_HARD = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")
_EXAMPLE = '{nofile: 1024, nproc: "2048:4096"}'

#: One limit: (name, soft, hard).
Ulimit = tuple[str, int, int]


def _soft_hard(name: str, value: Any) -> tuple[int, int]:
    expected = f'{name}: expected a whole number or "soft:hard" such as "1024:4096"'
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r}")
    match = _SOFT_HARD.match(str(value)) if isinstance(value, int | str) else None
    if match is None:
        raise ValueError(f"{expected}, got {value!r}")
    soft = int(match.group(1))
    hard = int(match.group(2)) if match.group(2) is not None else soft
    if soft > hard:
        raise ValueError(f"{name}: the soft limit {soft} is above the hard limit {hard}")
    return soft, hard


def parse_ulimits(value: Any) -> tuple[Ulimit, ...]:
    """Given the YAML value of ``ulimits`` (a mapping of limit names to a whole number, used
    as both soft and hard limit, or "soft:hard"), return (name, soft, hard) sorted by name.

    Raises:
        ValueError: not a mapping, an unknown name, or a malformed or inverted value.
    """
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping such as {_EXAMPLE}, got {type(value).__name__}")
    limits = []
    for name, limit in value.items():
        if name not in NAMES:
            raise ValueError(f"unknown limit {name!r}: expected one of {', '.join(NAMES)}")
        limits.append((name, *_soft_hard(name, limit)))
    return tuple(sorted(limits))


def show_ulimits(limits: tuple[Ulimit, ...]) -> dict[str, int | str]:
    """Given parsed limits, return them as ``planctonctl config`` prints them."""
    return {name: soft if soft == hard else f"{soft}:{hard}" for name, soft, hard in limits}


def lowest_hard_limits(*sources: Mapping[str, int | None]) -> dict[str, int]:
    """Given hard limits of several processes (None: unlimited), return for each name the
    lowest finite one; a limit that no source bounds is left out.
    """
    lowest: dict[str, int] = {}
    for source in sources:
        for name, hard in source.items():
            if hard is not None:
                lowest[name] = min(hard, lowest.get(name, hard))
    return lowest


def pilot_ulimits(configured: tuple[Ulimit, ...], ceilings: Mapping[str, int]) -> tuple[Ulimit, ...]:
    """Given the ``ulimits`` key and the hard limits in force (see :func:`lowest_hard_limits`),
    return the limits every pilot gets: the configured ones as they are, and
    :data:`DEFAULT_CAPPED` limits the key leaves out at the ceiling (soft and hard alike).
    """
    given = {name for name, _, _ in configured}
    capped = [name for name in DEFAULT_CAPPED if name not in given and name in ceilings]
    added = [(name, ceilings[name], ceilings[name]) for name in capped]
    return tuple(sorted([*configured, *added]))


def rlimit_fix(name: str, limits: tuple[Ulimit, ...]) -> str:
    """Given the limit an engine could not set and the limits the pilot asked for, return one
    line naming the cause and the fix."""
    asked = next(((soft, hard) for limit, soft, hard in limits if limit == name), None)
    what = f"{name}={asked[0]}:{asked[1]}" if asked else f"its own default {name}"
    return (
        f"the engine may not raise the pilot's {name} limit ({what}) above its own hard limit on this host "
        f"(no CAP_SYS_RESOURCE): set a lower one in config.yaml, such as ulimits: {{{name}: 1024}}, "
        f"or raise the engine's limit (LimitNOFILE=/LimitNPROC= in its service)"
    )
