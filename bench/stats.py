"""The statistics of a benchmark's repeated measurements, and the figures and results that
report them (in the table and in results.json)."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """Given values and a fraction in [0, 1], return that percentile, linearly interpolated."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Given measurements, return a distribution-free interval that holds their population's
    median with at least the given confidence: the order statistics whose ranks a binomial
    distribution with p = 1/2 puts outside on either side with at most (1 - confidence) / 2.
    Return (nan, nan) when there are too few measurements for one (fewer than 6 at 95%).
    """
    ordered = sorted(values)
    count = len(ordered)
    tail = (1 - confidence) / 2
    below, rank = 0.0, 0
    # the largest rank k such that P(X < k) <= tail for X ~ Binomial(count, 1/2)
    while rank < count and below + math.comb(count, rank) / 2**count <= tail:
        below += math.comb(count, rank) / 2**count
        rank += 1
    if rank == 0:
        return math.nan, math.nan
    return ordered[rank - 1], ordered[count - rank]


@dataclass(frozen=True)
class Stats:
    """The median, min, max and 95th percentile of repeated measurements, and a 95% interval
    of their median where there are enough of them."""

    median: float
    low: float
    high: float
    p95: float
    count: int
    missing: int = 0
    interval: tuple[float, float] = (math.nan, math.nan)

    @classmethod
    def of(cls, values: Sequence[float]) -> "Stats":
        """Given the measurements, return their statistics; nan stands for a repetition in
        which the figure could not be measured, and is left out (``count`` says how many were).
        """
        measured = [value for value in values if not math.isnan(value)]
        missing = len(values) - len(measured)
        if not measured:
            return cls(math.nan, math.nan, math.nan, math.nan, 0, missing)
        return cls(
            percentile(measured, 0.5),
            min(measured),
            max(measured),
            percentile(measured, 0.95),
            len(measured),
            missing,
            median_interval(measured),
        )

    @classmethod
    def paired(cls, mine: Sequence[float], base: Sequence[float]) -> "Stats":
        """Given measurements and their baselines, taken in turns in one run, return the
        statistics of their ratios; a pair whose baseline is zero, or either side missing (nan),
        is not measured."""
        return cls.of([one / other if other else math.nan for one, other in zip(mine, base, strict=True)])

    def as_dict(self) -> dict[str, float]:
        """Return the statistics for results.json."""
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "p95": self.p95,
            "n": self.count,
            "not_measured": self.missing,
            "interval95_low": self.interval[0],
            "interval95_high": self.interval[1],
        }


@dataclass(frozen=True)
class Figure:
    """One line of the results: a measured figure, and the target it is held to, if any.

    ``stats`` holds repeated measurements; ``value`` a single one. ``met`` is None for a
    figure without a target.
    """

    what: str
    unit: str
    stats: Stats | None = None
    value: float | None = None
    target: str = ""
    met: bool | None = None

    def shown(self) -> str:
        """Return the figure as the table shows it: median [min-max] unit."""
        if self.stats is not None and self.stats.count == 0:
            return "not measured"
        if self.stats is not None:
            spread = f" [{_number(self.stats.low)}-{_number(self.stats.high)}]" if self.stats.count > 1 else ""
            low, high = self.stats.interval
            if not math.isnan(low):
                spread += f", 95% interval {_number(low)}-{_number(high)}"
            missing = f" ({self.stats.missing} of {self.stats.count + self.stats.missing} not measured)"
            return f"{_number(self.stats.median)}{spread} {self.unit}".strip() + (missing if self.stats.missing else "")
        if self.value is None or math.isnan(self.value):
            return "not measured"
        return f"{_number(self.value)} {self.unit}".strip()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Figure":
        """Given a figure as results.json holds it, return the figure."""
        stats = None
        if "median" in data:
            interval = (data.get("interval95_low", math.nan), data.get("interval95_high", math.nan))
            stats = Stats(
                data["median"], data["min"], data["max"], data["p95"], data["n"], data.get("not_measured", 0), interval
            )
        return cls(data["what"], data["unit"], stats, data.get("value"), data.get("target", ""), data.get("met"))

    def as_dict(self) -> dict[str, Any]:
        """Return the figure for results.json."""
        data: dict[str, Any] = {"what": self.what, "unit": self.unit, "target": self.target, "met": self.met}
        if self.stats is not None:
            data.update(self.stats.as_dict())
        else:
            data["value"] = self.value
        return data


def _number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if value == round(value):
        return f"{value:.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def at_most(measured: float | None, limit: float) -> bool:
    """Return whether a measured figure exists and is at most the limit."""
    return measured is not None and not math.isnan(measured) and measured <= limit


def at_least(measured: float | None, limit: float) -> bool:
    """Return whether a measured figure exists and is at least the limit."""
    return measured is not None and not math.isnan(measured) and measured >= limit


def ratio_figure(
    what: str, mine: Sequence[float], base: Sequence[float], least: float | None, unit: str = "x"
) -> Figure:
    """Return the figure of the paired ratios of two legs, held to a median of at least
    ``least``, or reported without a target when ``least`` is None."""
    ratio = Stats.paired(mine, base)
    if least is None:
        return Figure(what, unit, ratio)
    return Figure(what, unit, ratio, target=f">= {least:g}", met=at_least(ratio.median, least))


@dataclass
class ScenarioResult:
    """What one scenario measured: its figures, the settings it ran with, and any raw data."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    #: when the scenario started (UTC, ISO format) and the host's load average then
    started: str | None = None
    load_average_at_start: list[float] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the result for results.json."""
        return {
            "started": self.started,
            "load_average_at_start": self.load_average_at_start,
            "seconds": round(self.seconds, 1),
            "error": self.error,
            "settings": self.settings,
            "figures": [figure.as_dict() for figure in self.figures],
            "raw": self.raw,
        }
