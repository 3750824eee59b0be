"""The health check after an update: the daemon watches a revision the last update took until
its pilots prove it, and has the node go back to the previous commit when they cannot start
under it where they ran before (:func:`plancton.core.rollout.health_verdict` decides).

The daemon keeps the commit as rejected in the state folder. Where the config folder is its
own to change (user mode), it then goes back at once through ``plancton-bootstrap --rollback``,
run as a child process (a fixed command, nothing of the configuration in it), which moves the
checkout, records the outcome for status and metrics, and reloads this daemon. Where it is
not (the installed service runs as its own user, the folder is root's), the next
``plancton-bootstrap --update`` of root's timer goes back before anything else.
"""

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable

from plancton.control.paths import Paths, location_arguments
from plancton.control.updates import TakenRevision, forget_taken, read_taken, write_rejected
from plancton.core.rollout import HealthSigns, Verdict, health_verdict
from plancton.daemon.starts import INSTANT_EXIT_SECONDS, StartTracker
from plancton.engines.base import Pilot

log = logging.getLogger(__name__)

#: How long the daemon, when it stops, waits for a rollback under way.
ROLLBACK_WAIT_SECONDS = 60.0


class RolloutWatch:
    """Watches the revision the last update took, once the daemon runs it.

    Args:
        paths: the folders of this installation (the state folder holds what was taken).
        wall: the wall clock, which pilots are dated by.
    """

    def __init__(self, paths: Paths, wall: Callable[[], float] = time.time) -> None:
        self.paths = paths
        self.wall = wall
        self.watched: TakenRevision | None = None
        self.since = 0.0
        self.failures_before = 0
        self.starts_before = 0
        self.healthy_before = True
        self.rollback: subprocess.Popen[str] | None = None
        self.rejected: TakenRevision | None = None

    def check(
        self, revision: str, pilots: list[Pilot], starts: StartTracker, image_unavailable: bool
    ) -> Verdict | None:
        """Given the revision in force, the pilots, the record of starts and failures, and
        whether the image cannot be had, judge the revision taken; roll it back when it is
        rejected. Return the verdict (None: nothing is watched)."""
        self._reap()
        taken = read_taken(self.paths)
        if taken is None or taken.revision != revision or self.rollback is not None:
            self.watched = None
            return None
        if taken == self.rejected:
            return Verdict.REJECTED  # going back is under way, or waits for root's update
        now = self.wall()
        if taken != self.watched:
            self.watched, self.since = taken, now
            self.failures_before, self.starts_before = starts.failures_total, starts.starts_total
            self.healthy_before = starts.failures == 0 or any(_ran(pilot, now) for pilot in pilots)
            log.info(
                "watching revision %s (commit %s): it passes once one of its pilots runs, or after %.0f s "
                "once its pilots were tried with nothing against them",
                *(revision, taken.commit[:12], taken.watch),
            )
        failures = starts.failures_total - self.failures_before
        signs = HealthSigns(
            elapsed=now - self.since,
            failures=failures,
            image_unavailable=image_unavailable,
            new_pilot_ran=any(pilot.created >= self.since and _ran(pilot, now) for pilot in pilots),
            new_pilot_tried=failures > 0 or starts.starts_total > self.starts_before,
            healthy_before=self.healthy_before,
        )
        verdict = health_verdict(signs, taken.watch)
        if verdict is Verdict.PASSED:
            log.info("revision %s (commit %s) passed its health check", revision, taken.commit[:12])
            forget_taken(self.paths)
            self.watched = None
        elif verdict is Verdict.REJECTED:
            why = "its image cannot be had" if signs.image_unavailable else f"{signs.failures} starts failed"
            log.error(
                "revision %s (commit %s): pilots cannot start (%s) where they ran under the previous revision; "
                "going back to commit %s",
                *(revision, taken.commit[:12], why, taken.previous[:12]),
            )
            self._reject(taken)
        return verdict

    def describe(self) -> str:
        """Return what status says of the revision on trial ("" when none is)."""
        if self.watched is None or self.watched == self.rejected:
            return ""
        trial = f"revision {self.watched.revision} (commit {self.watched.commit[:12]}) on trial"
        end = self.since + self.watched.watch
        if self.wall() < end:
            trial += f" until {time.strftime('%H:%M:%S', time.localtime(end))}"
        else:
            trial += ", no pilot of it started yet (the pool is full)"
        return f"{trial}: it passes once one of its pilots runs"

    def close(self) -> None:
        """Wait for a rollback under way to finish (it reloads a daemon that is going away)."""
        if self.rollback is not None:
            try:
                self.rollback.wait(ROLLBACK_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("the rollback (pid %d) is still running as the daemon stops", self.rollback.pid)
                return
            self._reap()

    def _reject(self, taken: TakenRevision) -> None:
        """Keep the commit as rejected, and go back now where the config folder is this
        daemon's to change."""
        try:
            write_rejected(self.paths, taken.commit)
        except OSError as error:
            log.error("cannot keep the rejected commit in %s: %s", self.paths.statedir, error.strerror)
            return
        self.rejected = taken
        if os.access(self.paths.confdir, os.W_OK):
            self._roll_back()
        else:
            log.warning(
                "the config folder %s is not this daemon's to change: the next plancton-bootstrap --update goes back",
                self.paths.confdir,
            )

    def _roll_back(self) -> None:
        command = [sys.executable, "-m", "plancton.cli.bootstrap", *location_arguments(self.paths), "--rollback"]
        try:
            self.rollback = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/"
            )
        except OSError as error:
            log.error("cannot run the rollback (%s): %s", " ".join(command), error)

    def _reap(self) -> None:
        """Say how a rollback that ended went."""
        if self.rollback is None or self.rollback.poll() is None:
            return
        output = (self.rollback.communicate()[0] or "").strip().replace("\n", "; ")
        if self.rollback.returncode == 0:
            log.info("rollback done: %s", output)
        else:
            log.error("rollback failed (exit code %d): %s", self.rollback.returncode, output)
        self.rollback = None


def _ran(pilot: Pilot, now: float) -> bool:
    """Return whether a pilot runs, and has run longer than an instant exit."""
    return pilot.state == "running" and now - pilot.created >= INSTANT_EXIT_SECONDS
