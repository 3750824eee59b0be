"""Loading a configuration: read the file and its overlays, parse every key, check across keys.

The file and the overlays beside it (``hosts/*.yaml``, see :mod:`plancton.config.overlays`)
are read safely, those that select this node merged, every key parsed with its declared
parser, the checks across keys run, and ``max_docks`` resolved for this host. Every problem is
reported at once, naming the file and the key (load, validate, then the logical checks).
"""

import dataclasses
import difflib
import hashlib
import os
from collections.abc import Sequence
from typing import Any

from plancton.config import deadline, legacy_keys, overlays, units
from plancton.config.expression import evaluate
from plancton.config.files import parse_yaml, read_file, revision_of
from plancton.config.schema import DEFAULT_REVISION, KEYS, MAX_POOL_SIZE, Config, HostFacts
from plancton.errors import ConfigError, ExpressionError

#: Binds that hand a pilot the host: refused unless ``allow_dangerous_binds`` is true.
DANGEROUS_BIND_SOURCES = ("/", "/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run")


#: The folder of overlays beside config.yaml, and how an overlay's name ends.
HOSTS_FOLDER = "hosts"
OVERLAY_SUFFIX = ".yaml"


def load(path: str, facts: HostFacts) -> tuple[Config, list[str]]:
    """Given a configuration file and the node's facts, return the config and its warnings:
    the file, then every overlay in ``hosts/`` beside it that selects the node, in name order.

    A missing or empty file (and no overlay) gives the defaults. Warnings name unknown keys
    (with a "did you mean" where one is close), legacy keys read as today's ones
    (:mod:`plancton.config.legacy_keys`), and files in ``hosts/`` that are not overlays.

    Raises:
        ConfigError: a file cannot be read (unreadable, a directory, too large) or parsed
            (not YAML, not a mapping, a malformed ``match:``), or any value is invalid; the
            error names the file and lists every problem at once, each key set by an overlay
            with that overlay's name.
    """
    content, base, found, notes = read_sources(path)
    merged = overlays.merge(base, found, facts)
    revision = DEFAULT_REVISION if content is None and not merged.applied else _revision(content, merged, found)
    config, warnings = parse(merged.raw, facts, source=path, revision=revision, origins=merged.origins)
    config = dataclasses.replace(config, overlays=merged.applied, overlay_origins=tuple(sorted(merged.origins.items())))
    return config, [*notes, *warnings]


def check_all(path: str, facts: HostFacts, now: float) -> tuple[list[str], list[str]]:
    """Given a checkout's config.yaml, the facts of a node to evaluate expressions on and the
    time now (Unix seconds), validate the checkout as a whole, whichever nodes its overlays
    select: every file, the base alone, and the base with each overlay over it. Return the
    overlays' names and the warnings. A ``drain_by`` already past is a problem here, where a
    commit is checked before any node takes it (a node that takes one later, once its time has
    come, drains at once, as the other nodes did).

    Raises:
        ConfigError: naming ``path``, with every problem, each headed by the files it arose from.
    """
    _, base, found, notes = read_sources(path)
    problems: list[str] = []
    base_problems: list[str] = []
    warnings = list(notes)
    name = os.path.basename(path)
    for combination in [(), *[(overlay,) for overlay in found]]:
        merged = overlays.apply(base, combination)
        label = " + ".join([name, *merged.applied])
        try:
            config, notes = parse(merged.raw, facts, source=name, origins=merged.origins)
        except ConfigError as error:
            # a problem of the base is told once, not again with every overlay
            new = [problem for problem in error.problems if problem not in base_problems]
            base_problems = error.problems if not combination else base_problems
            problems += [f"{label}: {problem}" for problem in new]
            continue
        warnings += notes
        setter = merged.origins.get("drain_by")
        if config.drain_by is not None and config.drain_by <= now and (not combination or setter):
            key = f"drain_by (set by {setter})" if setter else "drain_by"
            problems.append(
                f"{label}: {key}: {deadline.shown(config.drain_by)} is past, and a node taking it would start no "
                "pilot and stop those it runs; give a later time, or remove the key once the maintenance is over"
            )
    if problems:
        raise ConfigError(problems, path)
    return [overlay.name for overlay in found], sorted(set(warnings), key=warnings.index)


def read_sources(path: str) -> tuple[bytes | None, dict[Any, Any], list[overlays.Overlay], list[str]]:
    """Given a config.yaml, return its content (None when missing), its mapping, the overlays
    of ``hosts/`` beside it in name order, and warnings about files there that are not overlays.

    Raises:
        ConfigError: naming ``path``, with every problem of every file, each headed by its name
            (``hosts/NAME.yaml``) when it is an overlay.
    """
    problems: list[str] = []
    base: dict[Any, Any] = {}
    content = None
    try:
        content = read_file(path)
        base = parse_yaml(content, path) if content is not None else {}
    except ConfigError as error:
        problems += error.problems
    found = []
    paths, notes = overlay_paths(path)
    for overlay_path in paths:
        name = os.path.relpath(overlay_path, os.path.dirname(path))
        try:
            found.append(read_overlay(overlay_path, name))
        except ConfigError as error:
            problems += [f"{name}: {problem}" for problem in error.problems]
    if problems:
        raise ConfigError(problems, path)
    return content, base, found, notes


def overlay_paths(path: str) -> tuple[list[str], list[str]]:
    """Given a config.yaml, return the overlays beside it (``hosts/*.yaml``) in name order,
    and a warning for each other file there, which is ignored."""
    folder = os.path.join(os.path.dirname(path), HOSTS_FOLDER)
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except OSError as error:
        raise ConfigError([f"cannot list the overlays ({error.strerror}); check its permissions"], folder) from None
    if os.path.islink(folder):
        raise ConfigError(["is a symbolic link; overlays live in a plain folder hosts/ beside config.yaml"], folder)
    found = [os.path.join(folder, name) for name in names if name.endswith(OVERLAY_SUFFIX)]
    notes = [
        f"{os.path.join(folder, name)}: ignored; an overlay's name ends in {OVERLAY_SUFFIX}"
        for name in names
        if not name.endswith(OVERLAY_SUFFIX) and not name.startswith(".")
    ]
    return found, notes


def read_overlay(path: str, name: str) -> overlays.Overlay:
    """Given an overlay file and its name for the user, return the overlay.

    Raises:
        ConfigError: naming ``name``: a symbolic link, unreadable, not YAML, or a malformed
            ``match:``.
    """
    if os.path.islink(path):
        raise ConfigError(["is a symbolic link; an overlay is a plain file"], name)
    try:
        content = read_file(path)
    except ConfigError as error:
        raise ConfigError(error.problems, name) from None
    return overlays.parse_overlay(parse_yaml(content or b"", name), name)


def read_labels(path: str) -> frozenset[str]:
    """Given a labels file (one label a line), return its labels: none when it is missing.

    Raises:
        ConfigError: naming the file: unreadable, or a malformed label (with its line).
    """
    content = read_file(path)
    try:
        return overlays.parse_labels_text(content.decode("utf-8", errors="replace")) if content else frozenset()
    except ValueError as error:
        raise ConfigError([str(error)], path) from None


def _revision(content: bytes | None, merged: overlays.Merged, found: Sequence[overlays.Overlay]) -> str:
    """The revision of a node's configuration: the base file's own when no overlay applies,
    else a digest of the base and of each applied overlay's name and values."""
    if not merged.applied:
        return revision_of(content or b"")
    digest = hashlib.sha256(content or b"")
    for overlay in found:
        if overlay.name in merged.applied:
            digest.update(f"\0{overlay.name}\0{overlay.values!r}".encode())
    return digest.hexdigest()[:12]


def parse(
    raw: dict[Any, Any],
    facts: HostFacts,
    source: str = "configuration",
    revision: str = DEFAULT_REVISION,
    origins: dict[str, str] | None = None,
) -> tuple[Config, list[str]]:
    """Given a mapping of keys to raw values, return the validated config and its warnings.
    ``origins`` names, for each key an overlay set, that overlay: its problems name it too.

    Raises:
        ConfigError: naming ``source``, with one line per problem.
    """
    origins = origins or {}

    def named(key: str) -> str:
        return f"{key} (set by {origins[key]})" if key in origins else key

    translated = legacy_keys.translate(raw)
    problems, warnings = translated.problems, translated.warnings
    unread = legacy_keys.unread_pilot_keys(translated.raw, set(KEYS))
    values: dict[str, Any] = {}
    for name, value in translated.raw.items():
        if name in unread:
            problems.append(unread[name])
            continue
        if name not in KEYS:
            warnings.append(_unknown_key(name) + (f" (in {origins[name]})" if name in origins else ""))
            continue
        try:
            values[name] = KEYS[name].metadata["parse"](value)
        except ValueError as error:
            legacy = translated.read_from.get(name)
            problems.append(f"{legacy} (read as {name}): {error}" if legacy else f"{named(name)}: {error}")
    config = dataclasses.replace(Config(), **values, revision=revision, source=source, from_file=frozenset(values))
    problems += [f"{named(key)}: {problem}" for key, problem in _cross_checks(config)]
    try:
        config = dataclasses.replace(config, pool_size=pool_size(config, facts))
    except ExpressionError as error:
        problems.append(f"{named('max_docks')}: {error}, got {units.shown(config.max_docks)}")
    if problems:
        # the unknown keys are listed too: one of them may be the intended spelling of a key
        raise ConfigError(problems + warnings, source)
    return config, [f"{source}: {warning}" for warning in warnings]


def pool_size(config: Config, facts: HostFacts) -> int:
    """Given a config and the host's facts, return how many pilots ``max_docks`` allows.

    Raises:
        ExpressionError: the expression is not allowed, cannot be evaluated, or asks for more
            than :data:`MAX_POOL_SIZE` pilots.
    """
    names = {
        "ncpus": float(facts.ncpus),
        "ram_bytes": float(facts.ram_bytes),
        "swap_bytes": float(facts.swap_bytes),
        "max_dock_mem": float(config.max_dock_mem),
        "max_dock_swap": float(config.max_dock_swap),
    }
    size = max(0, int(evaluate(config.max_docks, names)))
    if size > MAX_POOL_SIZE:
        raise ExpressionError(f"expected at most {MAX_POOL_SIZE} pilots on this host, the expression gives {size}")
    return size


def _cross_checks(config: Config) -> list[tuple[str, str]]:
    """Given a config, return (key, problem) for each check across keys that fails."""
    problems = []
    if config.owner_idle_percent >= config.owner_busy_percent:
        problems.append(
            (
                "owner_idle_percent",
                f"expected less than owner_busy_percent ({config.owner_busy_percent:g}), "
                f"got {config.owner_idle_percent:g}",
            )
        )
    if 0 < config.lend_cores < config.cpus_per_dock:
        # the kernel (cgroup v1) refuses a pilot whose own CPU cap exceeds its parent's
        problems.append(
            (
                "lend_cores",
                f"expected 0 or at least cpus_per_dock ({config.cpus_per_dock:g}), since a lent pilot's own CPU cap "
                f"cannot exceed the cores lent, got {config.lend_cores:g}; lend more, or lower cpus_per_dock",
            )
        )
    if config.max_dock_mem and config.max_dock_mem < 6 * 1024**2:
        problems.append(
            ("max_dock_mem", f"expected at least 6M (Docker's minimum) or 0 for no cap, got {config.max_dock_mem}")
        )
    if not config.allow_dangerous_binds:
        for bind in config.binds:
            source = "/" + os.path.normpath(bind.split(":", 1)[0]).lstrip("/")
            # a symlink on the host may lead to the socket as well
            if {source, os.path.realpath(source)} & set(DANGEROUS_BIND_SOURCES):
                problems.append(
                    (
                        "binds",
                        f"{source} would hand the host to the pilots; set allow_dangerous_binds: true if that is "
                        "really wanted",
                    )
                )
    return problems


def _unknown_key(name: Any) -> str:
    close = difflib.get_close_matches(str(name)[:100], KEYS, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown key {units.shown(name)} ignored{hint}"
