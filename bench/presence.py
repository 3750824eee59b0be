"""Presence: a person touches the keyboard; how soon are the pilots paused?

logind's idle hint turns false on a real D-Bus (a private system-like bus with
python-dbusmock's logind, :mod:`tests.support.logind_mock`), and two parties follow it side by side:

- Plancton (``planctonctl foreground`` with ``input_idle`` set and a 30 s loop, so that only
  logind's signal can wake it in time), with POOL pilots;
- the floor: the least code that does the same job, a process of its own subscribed to the
  same signal that pauses POOL containers of the same kind through the SDK, one after another
  (``python -m bench.presence CONTAINER_JSON COUNT``).

Each repetition times from the idle hint's change to the engine's ``pause`` event of the last
pilot of each party; then the person leaves (idle for two minutes) and both resume their
pilots before the next repetition.
"""

import json
import os
import sys
import tempfile
import time
import unittest.mock
from pathlib import Path
from typing import Any

import docker
from jeepney import MatchRule  # type: ignore[import-untyped]
from jeepney.bus_messages import message_bus  # type: ignore[import-untyped]
from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]

from bench.engine import BENCH_LABEL
from bench.errors import BenchError
from bench.events import action_of, action_of_baseline
from bench.floor import create_and_start
from bench.harness import IDLE_OWNER, Bench
from bench.stats import Figure, ScenarioResult, Stats, at_most
from plancton.platform import logind
from tests.support import logind_mock

POOL = 2
COMMAND = ("sleep", "3600")
TARGET_SECONDS = 1.0
SETTINGS: dict[str, Any] = {
    **IDLE_OWNER,
    "max_docks": POOL,
    "docker_cmd": list(COMMAND),
    "input_idle": 60,
    "run_on_battery": True,
    "grace_spawn": 1,
    "grace_kill": 3600,
    "main_sleep": 30,
}
#: How long ago the person left, when they leave: well past input_idle.
AWAY_SECONDS = 120.0


def run(bench: Bench) -> ScenarioResult:
    """Measure the time from logind's idle hint turning false to the pilots paused."""
    if logind_mock.MISSING:
        raise BenchError(logind_mock.MISSING)
    repetitions = 4 if bench.quick else 10
    result = ScenarioResult("presence", settings={"plancton": SETTINGS, "pool": POOL, "repetitions": repetitions})
    plancton = bench.plancton("presence", SETTINGS)
    floor_tag = bench.baseline_tag("presence-floor")
    ours = action_of(plancton.name, "pause")
    floors = action_of_baseline(floor_tag, "pause")
    times: dict[str, list[float]] = {"plancton": [], "floor": []}
    folder = Path(tempfile.mkdtemp(prefix="bus-", dir=bench.workdir))
    try:
        with (
            logind_mock.system_bus(folder) as bus,
            logind_mock.running_logind(bus, folder / "dbusmock.log") as set_idle,
            # the daemon's and the floor's bus
            unittest.mock.patch.dict(os.environ, {"DBUS_SYSTEM_BUS_ADDRESS": bus}),
        ):
            set_idle(True, time.time() - AWAY_SECONDS)
            plancton.foreground()
            container = json.dumps(bench.pilot_like("presence-floor", COMMAND))
            floor = bench.spawn([sys.executable, "-m", "bench.presence", container, str(POOL)])
            plancton.wait_started(0.0, POOL)
            bench.events.wait(action_of_baseline(floor_tag, "start"), 0.0, POOL, what="starts of the floor's")
            for _ in range(repetitions):
                time.sleep(1.0)  # the floor's subscription and the daemon's loop are idle again
                touched = time.time()
                set_idle(False, touched)
                for name, match in (("plancton", ours), ("floor", floors)):
                    paused = bench.events.wait(match, touched, POOL, timeout=30, what=f"pauses by the {name}")
                    times[name].append(max(event.time for event in paused) - touched)
                left = time.time()
                set_idle(True, left - AWAY_SECONDS)
                bench.events.wait(action_of(plancton.name, "unpause"), left, POOL, timeout=30, what="resumed pilots")
                bench.events.wait(action_of_baseline(floor_tag, "unpause"), left, POOL, what="the floor's resumed")
            bench.stop_process(floor)
    finally:
        plancton.stop()
        plancton.remove_pilots()
        bench.remove_containers(f"{BENCH_LABEL}={floor_tag}")

    mine, base = Stats.of(times["plancton"]), Stats.of(times["floor"])
    ratios = Stats.paired(times["plancton"], times["floor"])
    result.figures = [
        Figure(
            "Plancton: idle hint false to pilots paused",
            "s",
            mine,
            target=f"< {TARGET_SECONDS:g} s, every run",
            met=at_most(mine.high, TARGET_SECONDS),
        ),
        Figure("floor (signal, then pause each through the SDK)", "s", base),
        Figure("Plancton / floor (paired)", "x", ratios),
    ]
    result.raw = {"seconds": times}
    return result


def pause_while_present(api: docker.APIClient, container: dict[str, Any], count: int) -> None:
    """Start ``count`` containers, then follow logind's idle hint on the system bus forever:
    pause them all when it turns false, unpause them when it turns true."""
    ids = [create_and_start(api, container) for _ in range(count)]
    changes = {
        "type": "signal",
        "interface": "org.freedesktop.DBus.Properties",
        "member": "PropertiesChanged",
        "path": logind.MANAGER_PATH,
    }
    with open_dbus_connection(bus="SYSTEM") as connection:
        connection.send_and_get_reply(message_bus.AddMatch(MatchRule(sender=logind.BUS_NAME, **changes)))
        with connection.filter(MatchRule(**changes)) as signals:
            while True:
                changed = connection.recv_until_filtered(signals).body[1]
                if "IdleHint" not in changed:
                    continue
                for container_id in ids:
                    (api.unpause if changed["IdleHint"][1] else api.pause)(container_id)


def main(argv: list[str]) -> int:
    """Run the floor with the container description and pool size on the command line."""
    container, count = json.loads(argv[0]), int(argv[1])
    pause_while_present(docker.APIClient(version="auto"), container, count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
