"""Parsers for the value types of configuration keys: sizes, durations, numbers, lists.

Each parser takes the raw value from YAML and returns the typed value, or raises
``ValueError`` whose message says what was expected and what was given, for example
``expected a size such as 2000000000 or "2G", got 'lots'``.
"""

import re
import shlex
from collections.abc import Callable
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _got(value: Any) -> str:
    return f"got {value!r}"


def parse_size(value: Any) -> int:
    """Given bytes as an integer or text such as "2G", "512MiB" or "1.5GB", return bytes.

    A bare unit letter (K, M, G, T) and the IEC forms (KiB, MiB...) are powers of 1024, as
    Docker reads them; KB, MB, GB, TB are powers of 1000.
    """
    expected = 'expected a size such as 2000000000 or "2G"'
    if isinstance(value, bool):
        raise ValueError(f"{expected}, {_got(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{expected} (not negative), {_got(value)}")
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{expected}, {_got(value)}")
    number, prefix, suffix = match.groups()
    base = 1000 if suffix.lower() == "b" and prefix else 1024
    return int(float(number) * base ** _POWERS[prefix.lower()])


def parse_duration(value: Any) -> float:
    """Given seconds as a number or text such as "30s", "5m", "2h" or "1d", return seconds."""
    expected = 'expected seconds such as 30 or "5m"'
    if isinstance(value, bool):
        raise ValueError(f"{expected}, {_got(value)}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{expected} (not negative), {_got(value)}")
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{expected}, {_got(value)}")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[(unit or "s").lower()]


def parse_bool(value: Any) -> bool:
    """Given a YAML boolean, return it; text such as "yes" is refused to avoid surprises."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, {_got(value)}")
    return value


def parse_text(value: Any) -> str:
    """Given non-empty text, return it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected non-empty text, {_got(value)}")
    return value


def parse_optional_text(value: Any) -> str | None:
    """Given text or null, return it (empty text counts as null)."""
    if value is None or value == "":
        return None
    return parse_text(value)


def parse_text_list(value: Any) -> tuple[str, ...]:
    """Given a list of text (or null for none), return it as a tuple."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of text, {_got(value)}")
    return tuple(value)


def parse_text_or_list(value: Any) -> tuple[str, ...]:
    """Given one text or a list of text, return a tuple of text (null gives none)."""
    return parse_text_list([value] if isinstance(value, str) else value)


def parse_command(value: Any) -> tuple[str, ...]:
    """Given a list of arguments, or text split into arguments as a shell would (without ever
    running one), return the arguments.
    """
    if isinstance(value, str):
        try:
            arguments = shlex.split(value)
        except ValueError as error:
            raise ValueError(f'expected a command such as "sleep 60", got {value!r} ({error})') from None
    else:
        arguments = list(parse_text_list(value))
    if not arguments:
        raise ValueError(f'expected a command such as "sleep 60", {_got(value)}')
    return tuple(arguments)


def parse_environment(value: Any) -> tuple[tuple[str, str], ...]:
    """Given a mapping of variable names to scalar values, return sorted (name, text) pairs."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping such as {{NAME: value}}, {_got(value)}")
    pairs = []
    for name, item in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"expected variable names such as MY_VAR, got {name!r}")
        if isinstance(item, dict | list) or item is None:
            raise ValueError(f"expected a plain value for {name}, {_got(item)}")
        pairs.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
    return tuple(sorted(pairs))


def number_in_range(low: float, high: float, integer: bool = False) -> Callable[[Any], float]:
    """Return a parser of a number (an integer when asked) between low and high inclusive."""
    kind = "a whole number" if integer else "a number"

    def parse(value: Any) -> float:
        wrong_type = isinstance(value, bool) or not isinstance(value, int | float)
        if wrong_type or (integer and not isinstance(value, int)):
            raise ValueError(f"expected {kind} from {low:g} to {high:g}, {_got(value)}")
        if not low <= value <= high:
            raise ValueError(f"expected {kind} from {low:g} to {high:g}, {_got(value)}")
        return float(value) if not integer else int(value)

    return parse


def one_of(*choices: str) -> Callable[[Any], str]:
    """Return a parser accepting exactly one of the given words."""

    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, {_got(value)}")
        return str(value)

    return parse


def matching(pattern: str, example: str) -> Callable[[Any], str]:
    """Return a parser of text that matches a regular expression in full."""
    compiled = re.compile(pattern)

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"expected text such as {example!r}, {_got(value)}")
        return value

    return parse


def each(parse_item: Callable[[Any], str]) -> Callable[[Any], tuple[str, ...]]:
    """Return a parser of a list (or one item) whose every item passes ``parse_item``."""

    def parse(value: Any) -> tuple[str, ...]:
        return tuple(parse_item(item) for item in parse_text_or_list(value))

    return parse
