"""The outcome of the last ``plancton-bootstrap --update``, kept in the state folder: written
by bootstrap, shown by ``planctonctl status`` and reported by the daemon as metrics, so that a
refused or unreachable update is seen on the node and from the farm's Prometheus.

Beside it, a staged rollout's files: the revision the last update took, which the daemon
watches; the commit this node rolled back from; when the latest commit was first seen.
"""

import contextlib
import dataclasses
import enum
import json
import os
from dataclasses import dataclass

from plancton.control.files import write_private_file
from plancton.control.node import made_state_folder
from plancton.control.paths import Paths
from plancton.errors import PlanctonError

RECORD_NAME = "config-update.json"


class UpdateOutcome(enum.Enum):
    """How an update ended."""

    UPDATED = "updated"
    CURRENT = "current"
    #: the latest commit is not signed by a trusted key
    UNTRUSTED = "untrusted"
    #: the latest commit's configuration is invalid on this node
    INVALID = "invalid"
    #: the repository could not be fetched
    UNREACHABLE = "unreachable"
    #: the latest commit was rolled back on this node: its pilots could not start under it
    ROLLED_BACK = "rolled_back"
    #: the latest commit rolls out over a window, and this node's turn has not come
    WAITING = "waiting"


#: The outcomes that leave the node on an older revision than its repository's, or unsure
#: (waiting for its turn in a rollout is none: it is what the revision asks).
FAILURES = (UpdateOutcome.UNTRUSTED, UpdateOutcome.INVALID, UpdateOutcome.UNREACHABLE, UpdateOutcome.ROLLED_BACK)


@dataclass(frozen=True)
class UpdateRecord:
    """The last update: how it ended, when (Unix seconds), the commit it looked at (when it
    got that far) and one line for people."""

    outcome: UpdateOutcome
    checked_at: float
    commit: str = ""
    message: str = ""

    @property
    def failed(self) -> bool:
        """Whether the update left the node behind its repository, or unsure of it."""
        return self.outcome in FAILURES


class UpdateFailed(PlanctonError):
    """An update that changed nothing on the node, and why.

    Args:
        outcome: one of :data:`FAILURES`.
        commit: the commit refused, or "" when none was fetched.
        message: one line naming the commit, the cause and the fix.
    """

    def __init__(self, outcome: UpdateOutcome, commit: str, message: str) -> None:
        self.outcome = outcome
        self.commit = commit
        super().__init__(message)


def record_path(paths: Paths) -> str:
    """Return the file of the last update's outcome, in the state folder."""
    return os.path.join(paths.statedir, RECORD_NAME)


def write_record(paths: Paths, record: UpdateRecord) -> None:
    """Write the last update's outcome atomically.

    Raises:
        OSError: the state folder cannot be created or written.
    """
    made_state_folder(paths)
    data = {**dataclasses.asdict(record), "outcome": record.outcome.value}
    write_private_file(record_path(paths), json.dumps(data) + "\n")


def read_record(path: str) -> UpdateRecord | None:
    """Given the record's path, return the last update's outcome, or None when there is none
    or it cannot be read. Never raises."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return UpdateRecord(
            outcome=UpdateOutcome(data["outcome"]),
            checked_at=float(data["checked_at"]),
            commit=str(data.get("commit", "")),
            message=str(data.get("message", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- staged rollout: the revision taken last, the commit rejected, when a commit was first seen --

TAKEN_NAME = "rollout-taken.json"
SEEN_NAME = "rollout-seen.json"
REJECTED_NAME = "rollout-rejected"


@dataclass(frozen=True)
class TakenRevision:
    """A commit an update took that changed this node's configuration, watched by the daemon
    until its pilots prove it (or it is rolled back): the commit, the one before it, the
    configuration revision it gives this node, when it was taken (Unix seconds), and for how
    long it is watched (seconds)."""

    commit: str
    previous: str
    revision: str
    taken_at: float
    watch: float


def write_taken(paths: Paths, taken: TakenRevision) -> None:
    """Keep the revision an update took, for the daemon's health check.

    Raises:
        OSError: the state folder cannot be created or written.
    """
    made_state_folder(paths)
    write_private_file(os.path.join(paths.statedir, TAKEN_NAME), json.dumps(dataclasses.asdict(taken)) + "\n")


def read_taken(paths: Paths) -> TakenRevision | None:
    """Return the revision the last update took and the daemon watches, or None. Never raises."""
    try:
        with open(os.path.join(paths.statedir, TAKEN_NAME), encoding="utf-8") as handle:
            data = json.load(handle)
        return TakenRevision(
            commit=str(data["commit"]),
            previous=str(data["previous"]),
            revision=str(data["revision"]),
            taken_at=float(data["taken_at"]),
            watch=float(data["watch"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget_taken(paths: Paths) -> None:
    """Stop watching the revision taken (it passed, or was rolled back)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(paths.statedir, TAKEN_NAME))


def first_seen(paths: Paths, commit: str, now: float) -> float:
    """Return when this node first saw ``commit`` as its branch's latest (Unix seconds): ``now``
    the first time, kept for the next updates.

    Raises:
        OSError: the state folder cannot be created or written.
    """
    path = os.path.join(paths.statedir, SEEN_NAME)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data["commit"] == commit:
            return float(data["seen_at"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    made_state_folder(paths)
    write_private_file(path, json.dumps({"commit": commit, "seen_at": now}) + "\n")
    return now


def write_rejected(paths: Paths, commit: str) -> None:
    """Keep the commit this node rolled back from, never to be taken again.

    Raises:
        OSError: the state folder cannot be created or written.
    """
    made_state_folder(paths)
    write_private_file(os.path.join(paths.statedir, REJECTED_NAME), commit + "\n")


def read_rejected(paths: Paths) -> str:
    """Return the commit this node rolled back from ("" for none). Never raises."""
    try:
        with open(os.path.join(paths.statedir, REJECTED_NAME), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""
