"""Overhead: the daemon's own CPU time and peak memory with 0, 20, 100 and 300 pilots, and the
Docker API requests it makes per loop and its loop's duration (as Plancton counts them in
state.json): how its cost grows with the pool.

One daemon runs with the default main_sleep (5 s) and sleeping busybox pilots. It starts with
max_docks 0; for each level the benchmark rewrites max_docks and runs ``planctonctl reload``,
waits until that many pilots run and one more loop has passed, then reads the daemon's CPU
time (all its threads) over a window, its peak resident memory (VmHWM: the peak since it
started, start-up of every pilot included) and ``api_calls_last_loop`` of every loop in the
window.
"""

import os
import statistics
import time
from typing import Any

import psutil
import yaml

from bench.cpu import process_cpu_seconds
from bench.errors import BenchError
from bench.harness import IDLE_OWNER, Bench, Plancton
from bench.stats import Figure, ScenarioResult, Stats, at_most

LEVELS = (0, 20, 100, 300)
TARGET_CORE_PERCENT = 1.0
TARGET_RSS_MB = 60.0
STATE_POLL_SECONDS = 0.2


def peak_rss_mb(pid: int) -> float:
    """Return a process's peak resident memory so far (VmHWM), in MB (10^6 bytes)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise BenchError(f"no VmHWM for pid {pid}")


def _set_pool(plancton: Plancton, pilots: int) -> None:
    """Rewrite max_docks in the daemon's configuration and make it reload."""
    path = os.path.join(plancton.confdir, "config.yaml")
    with open(path, encoding="utf-8") as handle:
        settings = yaml.safe_load(handle)
    settings["max_docks"] = pilots
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(settings, handle)
    plancton.ctl("reload")


def _wait_running(plancton: Plancton, pilots: int, timeout: float) -> float:
    """Wait until the daemon's state shows ``pilots`` running, and no other pilot but the spare
    that waits to replace one; return how long it took.

    Raises:
        BenchError: it did not get there in time.
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        state = plancton.state()
        running = [pilot for pilot in state.pilots if pilot.state == "running"]
        others = [pilot for pilot in state.pilots if pilot.state not in ("running", "spare")]
        if state.pid and len(running) == pilots and not others:
            return time.monotonic() - began
        time.sleep(STATE_POLL_SECONDS)
    raise BenchError(f"{pilots} pilots did not all run within {timeout:.0f} s")


def _measure(plancton: Plancton, window: float) -> dict[str, Any]:
    """Read the daemon's CPU time over a window, its peak memory and its requests per loop."""
    process = psutil.Process(plancton.pid)
    loops: dict[int, tuple[int, float]] = {}
    before = process_cpu_seconds(process.pid)
    began = time.monotonic()
    while time.monotonic() - began < window:
        state = plancton.state()
        if state.loops:
            loops[state.loops] = (state.api_calls_last_loop, state.loop_seconds)
        time.sleep(STATE_POLL_SECONDS)
    used = process_cpu_seconds(process.pid) - before
    elapsed = time.monotonic() - began
    return {
        "window_seconds": elapsed,
        "cpu_seconds": used,
        "cpu_seconds_per_minute": 60 * used / elapsed,
        "core_percent": 100 * used / elapsed,
        "peak_rss_mb": peak_rss_mb(process.pid),
        "rss_mb": process.memory_info().rss / 1e6,
        "api_calls_per_loop": [calls for calls, _ in loops.values()],
        "loop_seconds": [seconds for _, seconds in loops.values()],
    }


def run(bench: Bench) -> ScenarioResult:
    """Measure the daemon's CPU, memory and requests per loop at each number of pilots."""
    window = 10.0 if bench.quick else 20.0
    settings = {
        "max_docks": 0,
        "docks_per_loop": max(LEVELS),
        "max_starts_per_minute": 1000,
        "docker_cmd": ["sleep", "3600"],
        **IDLE_OWNER,
    }
    result = ScenarioResult("overhead", settings={"plancton": settings, "levels": LEVELS, "window_seconds": window})
    plancton = bench.plancton("overhead", settings)
    plancton.foreground()
    levels: dict[int, dict[str, Any]] = {}
    try:
        for pilots in LEVELS:
            if pilots:
                _set_pool(plancton, pilots)
            fill_seconds = _wait_running(plancton, pilots, timeout=300)
            plancton.wait_loops(plancton.state().loops + 1)
            levels[pilots] = {"fill_seconds": fill_seconds, **_measure(plancton, window)}
    finally:
        plancton.stop()
        plancton.remove_pilots()

    for pilots, figures in levels.items():
        last = pilots == max(LEVELS)
        calls = figures["api_calls_per_loop"]
        result.figures += [
            Figure(
                f"{pilots} pilots: daemon CPU",
                "% of a core",
                value=figures["core_percent"],
                target=f"< {TARGET_CORE_PERCENT:g}%" if last else "",
                met=at_most(figures["core_percent"], TARGET_CORE_PERCENT) if last else None,
            ),
            Figure(f"{pilots} pilots: daemon CPU time per minute", "s", value=figures["cpu_seconds_per_minute"]),
            Figure(
                f"{pilots} pilots: daemon peak RSS",
                "MB",
                value=figures["peak_rss_mb"],
                target=f"< {TARGET_RSS_MB:g} MB" if last else "",
                met=at_most(figures["peak_rss_mb"], TARGET_RSS_MB) if last else None,
            ),
            Figure(f"{pilots} pilots: Docker API requests per loop", "", Stats.of(calls)),
            Figure(f"{pilots} pilots: loop duration", "s", Stats.of(figures["loop_seconds"])),
        ]
    medians = [statistics.median(levels[pilots]["api_calls_per_loop"] or [float("nan")]) for pilots in LEVELS]
    result.figures.append(
        Figure(
            f"requests per loop at {max(LEVELS)} pilots / at 0",
            "x",
            value=medians[-1] / medians[0] if medians[0] else float("nan"),
            target="not growing with pilots (1x)",
            met=at_most(medians[-1] / medians[0], 1.0) if medians[0] else False,
        )
    )
    result.raw = {"levels": {str(pilots): figures for pilots, figures in levels.items()}}
    return result
