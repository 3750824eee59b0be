"""Per-node overlays: which ``hosts/*.yaml`` of a configuration repository select this node,
and the configuration they make merged over the base ``config.yaml``.

An overlay is a YAML mapping with a ``match:`` selector and any configuration keys::

    match:
      hosts: ["ws-*", "node07"]   # host-name patterns (fnmatch); any one may match
      ncpus: {min: 32}            # a range, bounds inclusive: {min: N}, {max: N}, both, or N exactly
      memory: {min: 64G}          # the same, in bytes or with a unit
      labels: [gpu]               # labels this node was given; it must have them all
    max_docks: ncpus - 4

Every criterion given must hold. The selected overlays apply in name order over the base, and
a key an overlay sets replaces the value before it, whole: a list or a mapping is replaced,
never merged item by item. Nothing here reads a file: see :mod:`plancton.config.loader`.
"""

import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from plancton.config import units
from plancton.config.schema import HostFacts
from plancton.errors import ConfigError

#: The key of an overlay that holds its selector.
MATCH = "match"
#: What a selector may say.
CRITERIA = ("hosts", "ncpus", "memory", "labels")
#: A label: letters, digits and ``_ . -``, starting with a letter or a digit.
LABEL = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
#: A host-name pattern: the characters of host names, with fnmatch's ``* ? [ ] !``.
_HOST_PATTERN = re.compile(r"[A-Za-z0-9*?\[\]!_.-]{1,253}")


@dataclass(frozen=True)
class Range:
    """Bounds of a figure, both inclusive; None for no bound."""

    minimum: float | None = None
    maximum: float | None = None

    def holds(self, value: float) -> bool:
        """Given a figure, return whether it lies within the bounds."""
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)


@dataclass(frozen=True)
class Selector:
    """Which nodes an overlay is for (see the module's documentation)."""

    hosts: tuple[str, ...] = ()
    ncpus: Range | None = None
    memory: Range | None = None
    labels: frozenset[str] = frozenset()

    def selects(self, node: HostFacts) -> bool:
        """Given a node's facts, return whether every criterion of this selector holds."""
        return (
            (not self.hosts or any(fnmatch.fnmatchcase(node.hostname, pattern) for pattern in self.hosts))
            and (self.ncpus is None or self.ncpus.holds(node.ncpus))
            and (self.memory is None or self.memory.holds(node.ram_bytes))
            and self.labels <= node.labels
        )


@dataclass(frozen=True)
class Overlay:
    """One overlay file: its name (as the user sees it), its selector and its keys."""

    name: str
    selector: Selector
    values: dict[str, Any]


@dataclass(frozen=True)
class Merged:
    """The raw configuration of a node: the keys of the base and of its overlays, which
    overlays applied (in order), and for each key an overlay set, that overlay's name."""

    raw: dict[Any, Any]
    applied: tuple[str, ...]
    origins: dict[str, str]


def parse_overlay(raw: dict[Any, Any], name: str) -> Overlay:
    """Given an overlay file's mapping and its name, return the overlay.

    Raises:
        ConfigError: naming the file, with every problem of its ``match:`` (missing, empty,
            an unknown criterion, a malformed pattern, range or label).
    """
    if MATCH not in raw:
        raise ConfigError(
            [f'{MATCH}: missing; say which nodes this file is for, such as {MATCH}: {{hosts: ["ws-*"]}}'], name
        )
    selector, problems = _parse_selector(raw[MATCH])
    if problems:
        raise ConfigError(problems, name)
    return Overlay(name, selector, {key: value for key, value in raw.items() if key != MATCH})


def _parse_selector(raw: Any) -> tuple[Selector, list[str]]:
    example = ' such as {hosts: ["ws-*"], ncpus: {min: 32}, memory: {min: 64G}, labels: [gpu]}'
    if not isinstance(raw, dict) or not raw:
        return Selector(), [f"{MATCH}: expected a mapping of criteria{example}, got {units.shown(raw)}"]
    problems = [
        f"{MATCH}.{str(criterion)[:60]}: unknown criterion; expected one of {', '.join(CRITERIA)}"
        for criterion in raw
        if criterion not in CRITERIA
    ]
    parsed: dict[str, Any] = {}
    parsers: dict[str, Callable[[Any], Any]] = {
        "hosts": _parse_hosts,
        "ncpus": _range_parser(_parse_count, "32"),
        "memory": _range_parser(units.parse_size, "64G"),
        "labels": _parse_labels,
    }
    for criterion, parse in parsers.items():
        if criterion in raw:
            try:
                parsed[criterion] = parse(raw[criterion])
            except ValueError as error:
                problems.append(f"{MATCH}.{criterion}: {error}")
    return Selector(**parsed), problems


def _parse_hosts(value: Any) -> tuple[str, ...]:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not patterns:
        raise ValueError(f'expected a list of host-name patterns such as ["ws-*", "node07"], got {units.shown(value)}')
    for pattern in patterns:
        if not isinstance(pattern, str) or _HOST_PATTERN.fullmatch(pattern) is None:
            raise ValueError(
                "expected host-name patterns of letters, digits, '.', '-', '_' and the wildcards * ? [ ], "
                f"got {units.shown(pattern)}"
            )
    return tuple(patterns)


def _parse_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of CPUs, got {units.shown(value)}")
    return value


def _range_parser(parse_bound: Callable[[Any], int], example: str) -> Callable[[Any], Range]:
    """Return a parser of ``{min: X, max: Y}`` (either bound may go) or of X alone (exactly X)."""

    def parse(value: Any) -> Range:
        expected = f"expected {{min: {example}}}, {{max: {example}}}, both, or {example} exactly"
        if not isinstance(value, dict):
            try:
                exact = parse_bound(value)
            except ValueError:
                raise ValueError(f"{expected}, got {units.shown(value)}") from None
            return Range(exact, exact)
        if not value or set(value) - {"min", "max"}:
            raise ValueError(f"{expected}, got {units.shown(value)}")
        try:
            bounds = {name: parse_bound(bound) for name, bound in value.items()}
        except ValueError as error:
            raise ValueError(f"{expected}: {error}") from None
        if bounds.get("min", 0) > bounds.get("max", float("inf")):
            raise ValueError(f"expected min no greater than max, got {units.shown(value)}")
        return Range(bounds.get("min"), bounds.get("max"))

    return parse


def _parse_labels(value: Any) -> frozenset[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"expected a list of labels such as [gpu, big], got {units.shown(value)}")
    return frozenset(parse_label(item) for item in items)


def parse_label(value: Any) -> str:
    """Given a label as written, return it.

    Raises:
        ValueError: not letters, digits and ``_ . -``, starting with a letter or a digit.
    """
    if not isinstance(value, str) or re.fullmatch(LABEL, value) is None:
        raise ValueError(
            f"expected a label of letters, digits, '_', '.' and '-' (such as gpu or rack-12), got {units.shown(value)}"
        )
    return value


def parse_labels_text(text: str) -> frozenset[str]:
    """Given the text of a labels file (one label a line; blank lines and ``#`` comments are
    skipped), return the labels.

    Raises:
        ValueError: naming the line of a malformed label.
    """
    labels = set()
    for number, line in enumerate(text.splitlines(), start=1):
        label = line.split("#", 1)[0].strip()
        if label:
            try:
                labels.add(parse_label(label))
            except ValueError as error:
                raise ValueError(f"line {number}: {error}") from None
    return frozenset(labels)


def merge(base: dict[Any, Any], overlays: Sequence[Overlay], node: HostFacts) -> Merged:
    """Given the base mapping, the overlays in the order they apply and a node's facts,
    return the node's raw configuration: see :func:`apply`, with the overlays that select it.
    """
    return apply(base, [overlay for overlay in overlays if overlay.selector.selects(node)])


def apply(base: dict[Any, Any], overlays: Sequence[Overlay]) -> Merged:
    """Given the base mapping and overlays, return the raw configuration that they make in
    this order: each overlay replaces the keys it sets, whole.
    """
    raw = dict(base)
    origins: dict[str, str] = {}
    for overlay in overlays:
        raw.update(overlay.values)
        origins.update(dict.fromkeys(map(str, overlay.values), overlay.name))
    return Merged(raw, tuple(overlay.name for overlay in overlays), origins)
