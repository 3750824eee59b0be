"""Loading a configuration: read the file, parse every key, check across keys.

The file is read safely, every key parsed with its declared parser, the checks across keys
run, and ``max_docks`` resolved for this host. Every problem of a file is reported at once,
naming the file and the key (load, validate, then the logical checks).
"""

import dataclasses
import difflib
import os
from typing import Any

from plancton.config import legacy_keys, units
from plancton.config.expression import evaluate
from plancton.config.files import parse_yaml, read_file, revision_of
from plancton.config.schema import DEFAULT_REVISION, KEYS, MAX_POOL_SIZE, Config, HostFacts
from plancton.errors import ConfigError, ExpressionError

#: Binds that hand a pilot the host: refused unless ``allow_dangerous_binds`` is true.
DANGEROUS_BIND_SOURCES = ("/", "/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run")


def load(path: str, facts: HostFacts) -> tuple[Config, list[str]]:
    """Given a configuration file and the host's facts, return the config and its warnings.

    A missing or empty file gives the defaults. Warnings name unknown keys (with a "did you
    mean" where one is close) and legacy keys read as today's ones
    (:mod:`plancton.config.legacy_keys`).

    Raises:
        ConfigError: the file cannot be read (unreadable, a directory, too large) or parsed
            (not YAML, not a mapping), or any value is invalid; the error names the file and
            lists every problem at once.
    """
    content = read_file(path)
    if content is None:
        return parse({}, facts, source=path)
    return parse(parse_yaml(content, path), facts, source=path, revision=revision_of(content))


def parse(
    raw: dict[Any, Any], facts: HostFacts, source: str = "configuration", revision: str = DEFAULT_REVISION
) -> tuple[Config, list[str]]:
    """Given a mapping of keys to raw values, return the validated config and its warnings.

    Raises:
        ConfigError: naming ``source``, with one line per problem.
    """
    translated = legacy_keys.translate(raw)
    problems, warnings = translated.problems, translated.warnings
    unread = legacy_keys.unread_pilot_keys(translated.raw, set(KEYS))
    values: dict[str, Any] = {}
    for name, value in translated.raw.items():
        if name in unread:
            problems.append(unread[name])
            continue
        if name not in KEYS:
            warnings.append(_unknown_key(name))
            continue
        try:
            values[name] = KEYS[name].metadata["parse"](value)
        except ValueError as error:
            legacy = translated.read_from.get(name)
            problems.append(f"{legacy} (read as {name}): {error}" if legacy else f"{name}: {error}")
    config = dataclasses.replace(Config(), **values, revision=revision, source=source, from_file=frozenset(values))
    problems += _cross_checks(config)
    try:
        config = dataclasses.replace(config, pool_size=pool_size(config, facts))
    except ExpressionError as error:
        problems.append(f"max_docks: {error}, got {units.shown(config.max_docks)}")
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


def _cross_checks(config: Config) -> list[str]:
    problems = []
    if config.owner_idle_percent >= config.owner_busy_percent:
        problems.append(
            f"owner_idle_percent: expected less than owner_busy_percent ({config.owner_busy_percent:g}), "
            f"got {config.owner_idle_percent:g}"
        )
    if 0 < config.lend_cores < config.cpus_per_dock:
        # the kernel (cgroup v1) refuses a pilot whose own CPU cap exceeds its parent's
        problems.append(
            f"lend_cores: expected 0 or at least cpus_per_dock ({config.cpus_per_dock:g}), since a lent pilot's "
            f"own CPU cap cannot exceed the cores lent, got {config.lend_cores:g}; lend more, or lower cpus_per_dock"
        )
    if config.max_dock_mem and config.max_dock_mem < 6 * 1024**2:
        problems.append(
            f"max_dock_mem: expected at least 6M (Docker's minimum) or 0 for no cap, got {config.max_dock_mem}"
        )
    if not config.allow_dangerous_binds:
        for bind in config.binds:
            source = "/" + os.path.normpath(bind.split(":", 1)[0]).lstrip("/")
            # a symlink on the host may lead to the socket as well
            if {source, os.path.realpath(source)} & set(DANGEROUS_BIND_SOURCES):
                problems.append(
                    f"binds: {source} would hand the host to the pilots; "
                    "set allow_dangerous_binds: true if that is really wanted"
                )
    return problems


def _unknown_key(name: Any) -> str:
    close = difflib.get_close_matches(str(name)[:100], KEYS, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown key {units.shown(name)} ignored{hint}"
