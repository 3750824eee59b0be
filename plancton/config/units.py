"""Parsers for the value types of configuration keys: sizes, durations, numbers, lists.

Each parser takes the raw value from YAML and returns the typed value, or raises
``ValueError`` whose message says what was expected and what was given, for example
``expected a size such as 2000000000 or "2G", got "lots"``.
"""

import json
import math
import re
import shlex
from collections.abc import Callable
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The largest size any key accepts (1 PiB): beyond it a value is surely a typo.
MAX_SIZE = 1024**5
_SIZE_EXAMPLE = 'a size such as 2000000000 or "2G"'
_DURATION_EXAMPLE = 'seconds such as 30 or "5m"'

_MAX_SHOWN = 80
_MAX_ITEMS = 4
_MAX_LEVELS = 3


def shown(value: Any) -> str:
    """Given any value read from YAML, return it as YAML would write it, for a message:
    ``"lots"``, ``true``, ``null``, ``[1, 2]``.

    A value from a hostile file may be huge, or nested and shared many times over through
    YAML aliases, so only a few items and levels are shown, and the text is cut short.
    """
    text = _render(value, _MAX_LEVELS)
    return text if len(text) <= _MAX_SHOWN + 8 else text[:_MAX_SHOWN] + "..."


def _render(value: Any, levels: int) -> str:
    if isinstance(value, str):
        return json.dumps(value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "...", ensure_ascii=False)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list | dict):
        if not levels:
            return "[...]" if isinstance(value, list) else "{...}"
        items = list(value.items())[:_MAX_ITEMS] if isinstance(value, dict) else value[:_MAX_ITEMS]
        if isinstance(value, dict):
            parts = [f"{_render(name, levels - 1)}: {_render(item, levels - 1)}" for name, item in items]
        else:
            parts = [_render(item, levels - 1) for item in items]
        parts += ["..."] if len(value) > _MAX_ITEMS else []
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        return f"{opening}{', '.join(parts)}{closing}"
    return repr(value)[:_MAX_SHOWN]


def _got(value: Any) -> str:
    return f"got {shown(value)}"


def format_size(size: int) -> str:
    """Given bytes, return them in the largest binary unit that divides them ("2G"), or as
    a plain number when none does.
    """
    for unit, power in sorted(_POWERS.items(), key=lambda item: -item[1]):
        if power and size and size % 1024**power == 0:
            return f"{size // 1024**power}{unit.upper()}"
    return str(size)


def parse_size(value: Any) -> int:
    """Given bytes as a whole number or text such as "2G", "512MiB" or "1.5GB", return bytes.

    A bare unit letter (K, M, G, T, P) and the IEC forms (KiB, MiB...) are powers of 1024, as
    Docker reads them; KB, MB, GB, TB, PB are powers of 1000. Raises ValueError for anything
    else, for a negative size, and for one above :data:`MAX_SIZE`.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_SIZE_EXAMPLE}, {_got(value)}")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"expected {_SIZE_EXAMPLE}, {_got(value)}")
        number, prefix, suffix = match.groups()
        base = 1000 if suffix.lower().endswith("b") and "i" not in suffix.lower() and prefix else 1024
        multiplier = base ** _POWERS[prefix.lower()]
        # whole numbers stay exact; a fraction or exponent goes through a (bounded) float
        scaled = int(number) * multiplier if number.isdigit() else float(number) * multiplier
        if scaled > MAX_SIZE:
            raise ValueError(f"expected {_SIZE_EXAMPLE} of at most {format_size(MAX_SIZE)}, {_got(value)}")
        size = int(scaled)
    if size < 0:
        raise ValueError(f"expected {_SIZE_EXAMPLE} (not negative), {_got(value)}")
    if size > MAX_SIZE:
        raise ValueError(f"expected {_SIZE_EXAMPLE} of at most {format_size(MAX_SIZE)}, {_got(value)}")
    return size


def parse_duration(value: Any) -> float:
    """Given seconds as a number or text such as "30s", "5m", "2h" or "1d", return seconds.

    Raises ValueError for anything else, including negative, infinite and NaN values.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_DURATION_EXAMPLE}, {_got(value)}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected {_DURATION_EXAMPLE} (finite, not negative), {_got(value)}")
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected {_DURATION_EXAMPLE}, {_got(value)}")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[(unit or "s").lower()]


def size_in_range(low: int, high: int = MAX_SIZE) -> Callable[[Any], int]:
    """Return a parser of a size (see :func:`parse_size`) from low to high bytes inclusive."""

    def parse(value: Any) -> int:
        size = parse_size(value)
        if not low <= size <= high:
            raise ValueError(f"expected a size from {format_size(low)} to {format_size(high)}, {_got(value)}")
        return size

    return parse


def duration_in_range(low: float, high: float) -> Callable[[Any], float]:
    """Return a parser of a duration (see :func:`parse_duration`) from low to high seconds inclusive."""

    def parse(value: Any) -> float:
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise ValueError(f"expected seconds from {low:g} to {high:g}, {_got(value)}")
        return seconds

    return parse


def parse_bool(value: Any) -> bool:
    """Given a YAML boolean, return it; text such as "yes" is refused to avoid surprises."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, {_got(value)}")
    return value


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
    expected = 'expected a command such as "sleep 60" or ["sleep", "60"]'
    if isinstance(value, str):
        try:
            arguments = shlex.split(value)
        except ValueError as error:
            raise ValueError(f"{expected}, {_got(value)} ({error})") from None
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        arguments = value
    else:
        raise ValueError(f"{expected}, {_got(value)}")
    if not arguments:
        raise ValueError(f"{expected}, {_got(value)}")
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
            raise ValueError(f"expected variable names such as MY_VAR, got {shown(name)}")
        if isinstance(item, dict | list) or item is None:
            raise ValueError(f"expected a plain value for {name}, {_got(item)}")
        pairs.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
    return tuple(sorted(pairs))


def number_in_range(low: float, high: float, integer: bool = False) -> Callable[[Any], float]:
    """Return a parser of a number (an integer when asked) between low and high inclusive."""
    kind = "a whole number" if integer else "a number"
    bounds = f"from {low:g} to {high:g}" if not integer else f"from {int(low)} to {int(high)}"

    def parse(value: Any) -> float:
        wrong_type = isinstance(value, bool) or not isinstance(value, int | float)
        if wrong_type or (integer and not isinstance(value, int)) or not low <= value <= high:
            raise ValueError(f"expected {kind} {bounds}, {_got(value)}")
        return float(value) if not integer else int(value)

    return parse


def one_of(*choices: str) -> Callable[[Any], str]:
    """Return a parser accepting exactly one of the given words."""

    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, {_got(value)}")
        return value

    return parse


def matching(pattern: str, example: str, rule: str = "") -> Callable[[Any], str]:
    """Return a parser of text that matches a regular expression in full; its error shows the
    example, and the rule in words when there is one."""
    compiled = re.compile(pattern)
    expected = f"text such as {shown(example)}" + (f" ({rule})" if rule else "")

    def parse(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"expected {expected}, {_got(value)}")
        return value

    return parse


def each(parse_item: Callable[[Any], str]) -> Callable[[Any], tuple[str, ...]]:
    """Return a parser of a list (or one item) whose every item passes ``parse_item``."""

    def parse(value: Any) -> tuple[str, ...]:
        return tuple(parse_item(item) for item in parse_text_or_list(value))

    return parse
