"""The pictures of the benchmark (matplotlib, a benchmark-only extra): for reclaim and harvest,
CPU of the owner, the pilots and the rest of the host, and the number of pilots, over time;
for overhead, the daemon's cost against the number of pilots.
"""

from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: draw to a file

import matplotlib.pyplot as plt

from bench.reclaim import TITLES


def draw(timelines: dict[str, dict[str, Any]], path: str) -> None:
    """Given the timelines of the scenarios (see :func:`bench.reclaim.timeline`), draw one panel
    per scenario into a PNG file at ``path``.
    """
    names = [name for name in TITLES if name in timelines]
    figure, axes = plt.subplots(len(names), 1, figsize=(11, 4.2 * len(names)), squeeze=False)
    for axis, name in zip(axes[:, 0], names, strict=True):
        _panel(axis, timelines[name], TITLES[name])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _panel(axis: Any, series: dict[str, Any], title: str) -> None:
    times = series["t"]
    axis.plot(times, series["owner"], color="tab:red", label="owner CPU (cores)")
    axis.plot(times, series["pilots"], color="tab:blue", label="pilots' CPU (cores)")
    axis.plot(times, series["other"], color="tab:gray", linewidth=0.8, alpha=0.7, label="rest of the host (cores)")
    axis.set_ylabel("CPU (cores)")
    axis.set_xlabel("seconds")
    axis.set_ylim(bottom=0)
    axis.set_title(title, fontsize=10)
    for label, when in series.get("marks", {}).items():
        axis.axvline(when, color="black", linestyle=":", linewidth=0.8)
        axis.annotate(label, (when, axis.get_ylim()[1]), fontsize=8, rotation=90, va="top", ha="left")
    counts = axis.twinx()
    counts.step(times, series["running"], where="post", color="tab:green", label="running pilots")
    counts.step(times, series["paused"], where="post", color="tab:olive", linestyle="--", label="paused pilots")
    counts.set_ylabel("pilots")
    counts.set_ylim(0, max([*series["running"], *series["paused"], 1]) + 1)
    lines, labels = axis.get_legend_handles_labels()
    more_lines, more_labels = counts.get_legend_handles_labels()
    axis.legend(
        lines + more_lines,
        labels + more_labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=5,
        fontsize=8,
        frameon=False,
    )


def draw_overhead(levels: dict[str, dict[str, Any]], path: str) -> None:
    """Given the overhead scenario's measurements by number of pilots (its ``raw["levels"]``),
    draw the daemon's CPU, peak memory and loop duration against the pilots into a PNG file.
    """
    pilots = sorted(int(count) for count in levels)
    measured = [levels[str(count)] for count in pilots]
    panels = [
        ("daemon CPU (% of a core)", [level["core_percent"] for level in measured]),
        ("daemon peak RSS (MB)", [level["peak_rss_mb"] for level in measured]),
        ("loop duration, median (ms)", [1000 * _median(level["loop_seconds"]) for level in measured]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(11, 3.4), squeeze=False)
    for axis, (label, values) in zip(axes[0], panels, strict=True):
        axis.plot(pilots, values, marker="o", color="tab:blue")
        axis.set_xlabel("pilots")
        axis.set_title(label, fontsize=10)
        axis.set_ylim(bottom=0)
        axis.set_xticks(pilots)
    figure.suptitle("Overhead: what the daemon costs as the pool grows", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
