"""The state file: what the daemon says of itself after each loop, in the run folder.

Written by the daemon alone, atomically, and read by ``planctonctl status``, the tests and
the benchmarks through :func:`read_state`: the one place its fields are named is
:class:`State`. A file written by another version reads with defaults for what it lacks.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from plancton.control.files import write_private_file


@dataclass(frozen=True)
class PilotRecord:
    """One pilot as the daemon last listed it (``created`` is Unix seconds)."""

    id: str
    name: str
    state: str
    created: float
    image: str = ""


@dataclass(frozen=True)
class State:
    """The daemon's state at the end of its last loop (every field has a default, so that a
    missing file or an older one reads as "nothing known yet").
    """

    pid: int = 0
    instance: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    mode: str = "active"
    config_file: str = ""
    config_revision: str = ""
    #: why the engine cannot be reached now, or None
    engine_error: str | None = None
    #: the engine that answers, as "Docker Engine 20.10.24"
    engine: str = ""
    #: the pilots' parent cgroup and how it was prepared ("cpu.idle 1", a warning ...)
    cgroup: dict[str, str] = field(default_factory=dict)
    log_error: str | None = None
    #: the policy's reasons for what it did in the last loop
    why: tuple[str, ...] = ()
    #: the drain deadline in force (Unix seconds), or None, and who set it (a file, or planctonctl)
    drain_by: float | None = None
    drain_by_source: str = ""
    #: the revision an update took, while its pilots have yet to prove it ("" when none is)
    revision_trial: str = ""
    #: what held pilots back in the last loop: values of :class:`plancton.core.holds.Hold`
    holds: tuple[str, ...] = ()
    loops: int = 0
    api_calls_last_loop: int = 0
    loop_seconds: float = 0.0
    #: the host sample of the last loop (see :class:`plancton.core.policy.HostSample`)
    sample: dict[str, Any] | None = None
    pilots: tuple[PilotRecord, ...] = ()
    #: legacy pilots (Plancton 0.6's) on the engine, by name: not managed unless asked
    legacy_pilots: tuple[str, ...] = ()


def write_state(path: str, state: State) -> None:
    """Write the state file atomically.

    Raises:
        OSError: the run folder is not writable.
    """
    write_private_file(path, json.dumps(dataclasses.asdict(state), indent=1) + "\n")


def read_state(path: str) -> State | None:
    """Given the state file's path, return its state, or None when it is missing or unreadable.

    Unknown fields (from a newer version) are ignored, missing ones take their defaults.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    known = {item.name for item in dataclasses.fields(State)}
    values = {name: value for name, value in data.items() if name in known}
    try:
        values["why"] = tuple(values.get("why") or ())
        values["holds"] = tuple(values.get("holds") or ())
        values["legacy_pilots"] = tuple(values.get("legacy_pilots") or ())
        values["pilots"] = tuple(PilotRecord(**pilot) for pilot in values.get("pilots") or ())
        return State(**values)
    except TypeError:
        return None
