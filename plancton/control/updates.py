"""The outcome of the last ``plancton-bootstrap --update``, kept in the state folder: written
by bootstrap, shown by ``planctonctl status`` and reported by the daemon as metrics, so that a
refused or unreachable update is seen on the node and from the farm's Prometheus.
"""

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


#: The outcomes that leave the node on an older revision than its repository's, or unsure.
FAILURES = (UpdateOutcome.UNTRUSTED, UpdateOutcome.INVALID, UpdateOutcome.UNREACHABLE)


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
