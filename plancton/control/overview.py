"""What ``planctonctl status --json`` and ``stats --json`` print, and the owner's page shows.

One function for each, read from the files the daemon writes (the state file, the mode file,
the pidfile, the ledger), so that the command and the page cannot say two different things.
"""

import dataclasses
import datetime
import time
from typing import Any

from plancton.control import ledger
from plancton.control.ledger import Day, Ledger
from plancton.control.modefiles import read_mode, read_snooze
from plancton.control.paths import Paths
from plancton.control.pidfile import running_pid
from plancton.control.state import State, read_state
from plancton.control.updates import read_record, record_path
from plancton.core.holds import Hold


def status_data(paths: Paths) -> dict[str, Any]:
    """Return the daemon's status: running, pid, uptime, mode, the snooze's end (Unix seconds,
    None without one), the drain deadline in force (Unix seconds, and who set it), engine,
    cgroup, why (sentences), holds (values of :class:`plancton.core.holds.Hold`), pilots."""
    pid = running_pid(paths.pidfile)
    state = read_state(paths.state_file)
    if pid is None or state is None or state.pid != pid:
        state = State()  # what the file says is not about this daemon
    now = time.time()
    snooze = read_snooze(paths.rundir)
    current = state.pid != 0
    return {
        "running": pid is not None,
        "pid": pid,
        "uptime_seconds": round(now - state.started_at, 1) if current else None,
        "mode": read_mode(paths.rundir).value,
        "snooze_until": snooze if snooze is not None and snooze > now else None,
        "drain_by": {"deadline": state.drain_by, "source": state.drain_by_source} if state.drain_by else None,
        "instance": state.instance or None,
        "config_file": paths.config_file,
        "config_revision": state.config_revision or None,
        "engine": state.engine or None,
        "engine_error": state.engine_error,
        "cgroup": state.cgroup,
        "log_error": state.log_error,
        "why": list(state.why),
        "holds": [hold.value for hold in Hold if hold.value in state.holds],
        "pilots": [
            {"id": p.id[:12], "name": p.name, "state": p.state, "age_seconds": round(now - p.created, 1)}
            for p in state.pilots
        ],
        "legacy_pilots": list(state.legacy_pilots),
        "log_file": paths.log_file,
        "config_update": update_data(paths),
        "revision_trial": state.revision_trial or None,
    }


def update_data(paths: Paths) -> dict[str, Any] | None:
    """Return how the last ``plancton-bootstrap --update`` ended, or None when none ran."""
    update = read_record(record_path(paths))
    if update is None:
        return None
    return {
        "outcome": update.outcome.value,
        "failed": update.failed,
        "checked_at": update.checked_at,
        "commit": update.commit or None,
        "message": update.message,
    }


def periods(book: Ledger, today: datetime.date) -> dict[str, Day]:
    """Return the ledger's totals for today, the last seven days and all time."""
    return {
        "today": book.total(today),
        "last_7_days": book.total(today - datetime.timedelta(days=6)),
        "all_time": book.total(),
    }


def stats_data(book: Ledger, today: datetime.date, since: datetime.date | None) -> dict[str, Any]:
    """Return what ``stats --json`` prints: the totals (of each period, or since a day) and
    the days they sum."""
    first = since.isoformat() if since else ""
    days = {name: dataclasses.asdict(day) for name, day in sorted(book.days.items()) if name >= first}
    if since is not None:
        return {"since": since.isoformat(), "total": dataclasses.asdict(book.total(since)), "days": days}
    totals = {name: dataclasses.asdict(day) for name, day in periods(book, today).items()}
    return {"first_day": min(book.days, default=None), **totals, "days": days}


def read_ledger(statedir: str) -> Ledger:
    """Return the ledger kept in the state folder (empty when the daemon never kept one).

    Raises:
        PlanctonError: the file is damaged or unreadable, naming it.
    """
    return ledger.load(ledger.ledger_path(statedir))
