"""Unit tests of plancton/metrics/ledger_reporter.py: what the loops and events add to the
ledger and the CPU history in the state folder."""

import datetime
import os
from pathlib import Path

from plancton.control import history, ledger
from plancton.control.ledger import Ending, GiveWay
from plancton.core.holds import Hold
from plancton.core.policy import HostSample
from plancton.metrics.ledger_reporter import LedgerReporter, ending, given_way
from plancton.metrics.reporting import LoopReport, PilotEvent

NOON = datetime.datetime(2026, 12, 5, 12, 0, 0).timestamp()


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def report(
    uptime: float, counter: float, running: int = 1, holds: tuple[Hold, ...] = (), **extra: object
) -> LoopReport:
    sample = HostSample(ncpus=2, busy_cores=1.5, pilots_cores=1.0, available_bytes=2**30)
    values: dict[str, object] = {
        "mode": "active",
        "uptime_seconds": uptime,
        "pilots_by_state": {"running": running},
        "config_revision": "r",
        "sample": sample,
        "loop_seconds": 0.01,
        "api_calls": 1,
        "engine_available": True,
        "holds": holds,
        "pilots_cpu": ("boot:/cg:7", counter),
    }
    values.update(extra)
    return LoopReport(**values)  # type: ignore[arg-type]


def test_endings_come_from_stops_kills_and_exits_never_twice() -> None:
    assert ending(PilotEvent("stopped", "p", reason="owner reclaim")) is Ending.OWNER
    assert ending(PilotEvent("stopped", "p", reason="ttl")) is Ending.TTL
    assert ending(PilotEvent("killed", "p", reason="memory")) is Ending.MEMORY
    assert ending(PilotEvent("stopped", "p", reason="force-stop")) is Ending.OTHER
    assert ending(PilotEvent("start_failed", "", reason="no such image")) is Ending.FAILED
    assert ending(PilotEvent("exited", "p", 0, 600.0)) is Ending.FINISHED
    assert ending(PilotEvent("exited", "p", 1, 0.5, failed=True)) is Ending.FAILED
    # stopped by Plancton: its ending was counted with the stop
    assert ending(PilotEvent("exited", "p", 137, 60.0, by_plancton=True)) is None
    assert ending(PilotEvent("started", "p")) is None


def test_the_owners_reason_wins_over_a_drain() -> None:
    assert given_way((Hold.MODE, Hold.INPUT)) is GiveWay.KEYBOARD
    assert given_way((Hold.OWNER_BUSY, Hold.SNOOZE)) is GiveWay.SNOOZE
    assert given_way((Hold.MODE,)) is GiveWay.DRAIN
    assert given_way((Hold.POOL_FULL, Hold.GRACE_SPAWN)) is None


def test_loops_and_events_reach_the_file_and_a_restart_goes_on_from_it(tmp_path: Path) -> None:
    clock = Clock()
    keeper = LedgerReporter(str(tmp_path), clock)
    keeper.loop(report(0.0, 100.0))
    keeper.pilot_event(PilotEvent("started", "p1"))
    keeper.pilot_event(PilotEvent("stopped", "p1", reason="owner reclaim"))
    clock.now += 5
    keeper.loop(report(5.0, 104.0, holds=(Hold.OWNER_BUSY,)))
    day = ledger.load(ledger.ledger_path(str(tmp_path))).total()
    assert day.cpu_seconds == 4.0 and day.lent_seconds == 5.0
    assert day.started == 1 and day.ended == {"owner": 1}
    assert day.given_way_seconds == {"cpu": 5.0}
    # a new daemon (killed or restarted) starts from the file and counts its first loop as 0 s
    again = LedgerReporter(str(tmp_path), clock)
    clock.now += 5
    again.loop(report(0.0, 110.0))
    assert again.all_time().cpu_seconds == 10.0
    assert again.all_time().lent_seconds == 5.0


def test_time_under_a_cap_is_lent_in_part(tmp_path: Path) -> None:
    keeper = LedgerReporter(str(tmp_path), Clock())
    keeper.loop(report(0.0, 0.0, cpu_cap=1.0))
    keeper.loop(report(10.0, 10.0, cpu_cap=1.0, holds=(Hold.INPUT,)))
    assert keeper.all_time().partly_lent_seconds == 10.0
    assert keeper.all_time().given_way_seconds == {"keyboard": 10.0}


def test_a_damaged_ledger_is_kept_aside_and_a_new_one_begins(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text("{damaged")
    keeper = LedgerReporter(str(tmp_path), Clock())
    keeper.loop(report(0.0, 5.0))
    aside = [name for name in os.listdir(tmp_path) if name.startswith("ledger.json.damaged-")]
    assert len(aside) == 1
    assert (tmp_path / aside[0]).read_text() == "{damaged"
    assert ledger.load(str(path)).cpu_mark is not None


def test_each_minute_goes_to_the_history_as_its_mean(tmp_path: Path) -> None:
    clock = Clock(NOON)
    keeper = LedgerReporter(str(tmp_path), clock)
    for second in (0, 20, 40):
        clock.now = NOON + second
        keeper.loop(report(second, 0.0))
    assert history.read_history(str(tmp_path)) == []  # the minute is still under way
    clock.now = NOON + 60
    keeper.loop(report(60.0, 0.0, sample=HostSample(2, 2.0, 0.0, 2**30)))
    assert history.read_history(str(tmp_path)) == [(NOON, 0.5, 1.0)]
    keeper.close()
    assert history.read_history(str(tmp_path))[-1] == (NOON + 60, 2.0, 0.0)


def test_the_history_keeps_one_day(tmp_path: Path) -> None:
    start = NOON - 2 * 86400
    minutes = [(start + 60 * index, 0.1, 0.2) for index in range(3 * 1440)]
    history.write_history(str(tmp_path), minutes)
    kept = history.read_history(str(tmp_path))
    assert len(kept) == history.KEEP_MINUTES and kept[-1] == minutes[-1]
