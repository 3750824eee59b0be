"""Legacy keys read as today's, and unknown keys that name the pilots' image or command.

Legacy keys whose meaning is certain are read as today's key, with a warning naming it; keys
that have no equivalent are warned about with the nearest key. A file that names the pilots'
image or command only under a key Plancton does not read is refused: running the default
busybox pilot in place of a site's own is never what its administrator meant.
"""

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from plancton.config import units
from plancton.config.schema import Config, default_value

#: Legacy name -> today's key, for keys whose value means the same.
RENAMED = {
    "pilot_dock": "docker_image",
    "pilot_entrypoint": "docker_cmd",
    "pilot_privileged": "docker_privileged",
    "maxcontainers": "max_docks",
    "secopt": "security_opts",
}
#: Legacy keys with no equivalent -> what to use instead.
RETIRED = {
    "morbidity": "main_sleep (seconds between two loops)",
    "rigidity": "pause_delay and grace_kill (seconds before a busy owner's pilots are paused, then stopped)",
    "cputhresh": "owner_busy_percent and owner_idle_percent (the owner's CPU use that reclaims the host)",
    "sandbox": "binds (host folders in the pilots)",
    "dock_condor_conf": "binds (bind the HTCondor configuration files into the pilots)",
    "parrot_wrapper_path": "binds (bind the job wrapper into the pilots)",
}
#: The InfluxDB keys of releases before 0.6, which together make one influxdb_url.
INFLUXDB_PARTS = ("influxdb_address", "database_name", "database_schema")
_INFLUXDB_PART_DEFAULTS = {"database_name": "plancton-monitor", "database_schema": "http"}
_COMMAND_WORDS = re.compile(r"cmd|command|entrypoint|entry_point|args")
_IMAGE_WORDS = re.compile(r"image|img")


@dataclass
class Translation:
    """A configuration's raw keys with legacy names read as today's, and what was said."""

    raw: dict[Any, Any]
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: today's key -> the legacy key(s) its value was read from, to name them in a problem
    read_from: dict[str, str] = field(default_factory=dict)


def translate(raw: dict[Any, Any]) -> Translation:
    """Given a file's raw mapping, return the mapping with legacy keys
    read as today's ones, a warning for each legacy key, and a problem for each one whose
    today's key is set too (which one was meant cannot be known).
    """
    result = Translation(
        {name: value for name, value in raw.items() if name not in RENAMED and name not in INFLUXDB_PARTS}
    )
    for old, new in RENAMED.items():
        if old not in raw:
            continue
        if new in raw:
            result.problems.append(f"{old}: the older name of {new}, which is set too; remove {old}")
            continue
        result.raw[new] = raw[old]
        result.read_from[new] = old
        result.warnings.append(f"{old}: read as {new}, its name since Plancton 0.6; rename it")
    _translate_influxdb(raw, result)
    for old, instead in RETIRED.items():
        if old in raw:
            result.warnings.append(f"{old}: a key of Plancton before 0.6, ignored; use {instead}")
    result.raw = {name: value for name, value in result.raw.items() if name not in RETIRED}
    return result


def _translate_influxdb(raw: dict[Any, Any], result: Translation) -> None:
    given = [name for name in INFLUXDB_PARTS if name in raw]
    if not given:
        return
    named = ", ".join(given)
    if "influxdb_url" in raw:
        result.warnings.append(f"{named}: older InfluxDB keys, ignored since influxdb_url is set; remove them")
        return
    if "influxdb_address" not in raw:
        result.warnings.append(f"{named}: older InfluxDB keys, ignored without influxdb_address; set influxdb_url")
        return
    parts = {name: raw.get(name, _INFLUXDB_PART_DEFAULTS.get(name)) for name in INFLUXDB_PARTS}
    if not all(isinstance(part, str) for part in parts.values()):
        result.problems.append(f"{named}: expected text, got {units.shown([raw[name] for name in given])}")
        return
    url = f"{parts['database_schema']}://{parts['influxdb_address']}#{parts['database_name']}"
    result.raw["influxdb_url"] = url
    result.read_from["influxdb_url"] = named
    result.warnings.append(f"{named}: read as influxdb_url {units.shown(url)}; write that instead")


def unread_pilot_keys(raw: dict[Any, Any], keys: set[str]) -> dict[str, str]:
    """Given a file's raw mapping (legacy keys already translated) and today's key names,
    return the unknown keys that name the pilots' image or command, each with its problem,
    when the file does not set that through docker_image or docker_cmd and the value is not
    what would run anyway.
    """
    problems = {}
    for name, value in raw.items():
        if not isinstance(name, str) or name in keys:
            continue
        right = _pilot_key_meant(name)
        if right is None or right in raw or _runs_anyway(right, value):
            continue
        what = "image" if right == "docker_image" else "command"
        problems[name] = (
            f"{name}: not a key of Plancton, so the pilots would run the default {what}; set {right} instead"
        )
    return problems


def _pilot_key_meant(name: str) -> str | None:
    lowered = name.lower()
    close = difflib.get_close_matches(lowered, ["docker_image", "docker_cmd"], n=1, cutoff=0.75)
    if close:
        return close[0]
    if _COMMAND_WORDS.search(lowered):
        return "docker_cmd"
    if _IMAGE_WORDS.search(lowered):
        return "docker_image"
    return None


def _runs_anyway(right: str, value: Any) -> bool:
    # a misspelt key holding the default changes nothing that runs
    try:
        parsed = units.parse_command(value) if right == "docker_cmd" else value
    except ValueError:
        return False
    return bool(parsed == default_value(right))


def changed_meanings(config: Config) -> list[str]:
    """Given a configuration, return one note for each of its settings that Plancton 0.6
    read differently (for a site that moves a legacy configuration here).
    """
    notes = []
    for bind in config.binds:
        options = bind.split(":")[2].split(",") if bind.count(":") > 1 else []
        if "rw" not in options and "ro" not in options:
            notes.append(
                f"binds: {bind} is read-only in the pilots (Plancton 0.6 mounted every bind rw,shared,Z); "
                "add :rw (or :rw,shared) if the pilots write there, or :ro to say it"
            )
    if "user_group" not in config.from_file:
        notes.append(
            f"user_group: pilots run as {config.user_group} (Plancton 0.6 ran them as root, 0:0); "
            'set user_group: "0:0" if the pilot needs root'
        )
    if "grace_kill" in config.from_file:
        notes.append(
            "grace_kill: counts from when the pilots are paused, pause_delay after the owner got busy "
            "(Plancton 0.6 counted from when the host got busy): pilots stop after pause_delay + grace_kill"
        )
    if "grace_spawn" in config.from_file:
        notes.append(
            "grace_spawn: counts from when the owner is idle again "
            "(Plancton 0.6 counted from the last pilot it removed, for any reason)"
        )
    return notes
