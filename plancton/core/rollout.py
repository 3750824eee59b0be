"""Staged rollout of a configuration revision, and the health check after a node takes one.

A revision may spread over a window: each node takes it at an offset into the window set by
a hash of its host name (:func:`rollout_offset`), so that a share of the farm goes first. After
taking it, the daemon watches its pilots (:func:`health_verdict`): when they cannot start
under the new revision, where they ran under the previous one, the node goes back.
"""

import enum
import hashlib
from dataclasses import dataclass

#: Start failures and instant exits under a new revision that reject it (with no pilot of it
#: running well), as many as start back-off waits for.
FAILURES_TO_REJECT = 3


def rollout_offset(host_name: str, window: float) -> float:
    """Given a host name and a rollout window in seconds, return how far into the window this
    node takes a revision: the same on every run, spread evenly over a farm's names."""
    digest = hashlib.sha256(host_name.encode("utf-8", errors="replace")).digest()
    return window * int.from_bytes(digest[:8], "big") / 2**64


class Verdict(enum.Enum):
    """What the health check says of a revision taken."""

    WATCHING = "watching"  # too early to tell
    PASSED = "passed"  # a pilot of it runs, or the watch ended with its pilots tried and nothing against it
    REJECTED = "rejected"  # its pilots cannot start, where the previous revision's ran


@dataclass(frozen=True)
class HealthSigns:
    """What the daemon saw of its pilots since it took a revision.

    Args:
        elapsed: seconds since it took it.
        failures: starts refused and pilots that exited at once by themselves since then.
        image_unavailable: the revision's image is missing and cannot be had (pull failed, or
            pull_policy never).
        new_pilot_ran: a pilot started under the revision ran past an instant exit.
        new_pilot_tried: a pilot was started under the revision, or a start was tried (a pool
            kept full by the previous revision's pilots tries none).
        healthy_before: pilots ran under the previous revision (none failing).
    """

    elapsed: float
    failures: int = 0
    image_unavailable: bool = False
    new_pilot_ran: bool = False
    new_pilot_tried: bool = True
    healthy_before: bool = True


def health_verdict(signs: HealthSigns, watch: float) -> Verdict:
    """Given what was seen since a revision was taken and how long to watch it, return the
    verdict: passed as soon as one of its pilots runs; rejected when its pilots cannot start
    (its image cannot be had, or :data:`FAILURES_TO_REJECT` failures) where the previous
    revision's ran; passed when the watch ends otherwise, once a pilot of it was tried;
    watching until then (a revision none of whose pilots was tried has shown nothing yet)."""
    if signs.new_pilot_ran:
        return Verdict.PASSED
    failing = signs.image_unavailable or signs.failures >= FAILURES_TO_REJECT
    if failing and signs.healthy_before:
        return Verdict.REJECTED
    return Verdict.PASSED if signs.elapsed >= watch and signs.new_pilot_tried else Verdict.WATCHING
