"""Unit tests of plancton/control/ledger.py: accounting, bounds and the file."""

import datetime
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.control import ledger
from plancton.control.ledger import CpuReading, Ending, GiveWay, Ledger, LedgerError, LoopAccount

DAY = datetime.date(2026, 12, 5)


def test_a_new_ledger_counts_from_its_first_reading_not_from_what_came_before():
    book = ledger.account(Ledger(), LoopAccount(DAY, cpu=CpuReading("boot1:7", 5000.0)))
    book = ledger.account(book, LoopAccount(DAY, interval=5, cpu=CpuReading("boot1:7", 5012.5)))
    assert book.total().cpu_seconds == pytest.approx(12.5)


def test_a_ledger_begun_before_any_counter_counts_the_first_pilots_from_zero():
    """The first loop comes before the parent cgroup (or a systemd slice) exists: the counter
    read once the first pilots run holds their seconds, which count, also after a restart."""
    book = ledger.account(Ledger(), LoopAccount(DAY, cpu=None))
    book = ledger.account(book, LoopAccount(DAY, interval=1, cpu=None))
    book = ledger.account(book, LoopAccount(DAY, interval=1, cpu=CpuReading("boot1:7", 0.2)))
    book = ledger.account(book, LoopAccount(DAY, interval=1, cpu=CpuReading("boot1:7", 1.2)))
    assert book.total().cpu_seconds == pytest.approx(1.2)


def test_a_counter_of_a_new_cgroup_adds_all_it_holds():
    book = Ledger(cpu_mark=CpuReading("boot1:7", 800.0))
    book = ledger.account(book, LoopAccount(DAY, cpu=CpuReading("boot2:7", 30.0)))
    assert book.total().cpu_seconds == pytest.approx(30.0)
    assert book.cpu_mark == CpuReading("boot2:7", 30.0)


def test_an_unreadable_counter_keeps_the_last_reading():
    book = Ledger(cpu_mark=CpuReading("boot1:7", 10.0))
    book = ledger.account(book, LoopAccount(DAY, interval=5, cpu=None))
    book = ledger.account(book, LoopAccount(DAY, interval=5, cpu=CpuReading("boot1:7", 14.0)))
    assert book.total().cpu_seconds == pytest.approx(4.0)


@given(
    readings=st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=30),
    saved_after=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_a_daemon_killed_between_loops_never_counts_cpu_twice_nor_loses_it(readings, saved_after, tmp_path_factory):
    """However often the daemon dies (its unsaved loops lost), the ledger's CPU seconds are
    the counter's growth from the first reading to the last one saved."""
    path = os.path.join(tmp_path_factory.mktemp("ledger"), "ledger.json")
    counter = sorted(readings)
    ledger.save(path, ledger.account(Ledger(), LoopAccount(DAY, cpu=CpuReading("b:1", counter[0]))))
    book = ledger.load(path)
    last_saved = counter[0]
    for value, saved in zip(counter[1:], saved_after, strict=False):
        book = ledger.account(book, LoopAccount(DAY, interval=1, cpu=CpuReading("b:1", value)))
        if saved:
            ledger.save(path, book)
            last_saved = value
        else:
            book = ledger.load(path)  # killed before saving: the next daemon starts from the file
    assert ledger.load(path).total().cpu_seconds == pytest.approx(last_saved - counter[0])


def test_time_lent_and_given_way_go_to_the_loops_day_by_reason():
    book = Ledger()
    book = ledger.account(book, LoopAccount(DAY, interval=5, lending=True))
    book = ledger.account(book, LoopAccount(DAY, interval=5, lending=True, given_way=GiveWay.CPU))
    book = ledger.account(book, LoopAccount(DAY, interval=3, given_way=GiveWay.KEYBOARD))
    book = ledger.account(book, LoopAccount(DAY + datetime.timedelta(days=1), interval=2, given_way=GiveWay.SNOOZE))
    first = book.days[DAY.isoformat()]
    assert first.lent_seconds == 10
    assert first.given_way_seconds == {"cpu": 5, "keyboard": 3}
    assert book.total().given_way_seconds == {"cpu": 5, "keyboard": 3, "snooze": 2}
    assert book.total(since=DAY + datetime.timedelta(days=1)).lent_seconds == 0


def test_pilots_started_and_their_endings_are_counted():
    book = ledger.account(Ledger(), LoopAccount(DAY, started=3, ended={Ending.FINISHED: 1, Ending.OWNER: 2}))
    book = ledger.account(book, LoopAccount(DAY, started=1, ended={Ending.OWNER: 1, Ending.FAILED: 1}))
    total = book.total()
    assert total.started == 4
    assert total.ended == {"finished": 1, "owner": 3, "failed": 1}


def test_days_older_than_the_keep_limit_are_dropped():
    book = Ledger()
    start = DAY - datetime.timedelta(days=ledger.KEEP_DAYS + 10)
    for offset in range(ledger.KEEP_DAYS + 11):
        book = ledger.account(book, LoopAccount(start + datetime.timedelta(days=offset), interval=1, lending=True))
    assert len(book.days) == ledger.KEEP_DAYS
    assert min(book.days) == (DAY - datetime.timedelta(days=ledger.KEEP_DAYS - 1)).isoformat()
    assert ledger.KEEP_DAYS >= 366


def test_a_year_of_days_stays_a_small_file(tmp_path):
    book = Ledger(cpu_mark=CpuReading("b:1", 0.0))
    for offset in range(ledger.KEEP_DAYS):
        day = DAY - datetime.timedelta(days=offset)
        every = {ending: 3 for ending in Ending}
        book = ledger.account(book, LoopAccount(day, interval=86400, lending=True, started=40, ended=every))
        for reason in GiveWay:
            book = ledger.account(book, LoopAccount(day, interval=100, given_way=reason))
    path = str(tmp_path / "ledger.json")
    ledger.save(path, book)
    assert os.path.getsize(path) < 256 * 1024
    assert ledger.load(path) == book


def test_a_missing_file_is_an_empty_ledger(tmp_path):
    assert ledger.load(str(tmp_path / "none.json")) == Ledger()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"version": 99, "days": {}}), "format version 99"),
        (json.dumps({"version": 1, "days": {"yesterday": {}}}), "not a ledger"),
        (json.dumps([1, 2]), "not a ledger"),
    ],
)
def test_a_damaged_file_is_refused_with_its_path_and_left_as_it_is(tmp_path, text, says):
    path = tmp_path / "ledger.json"
    path.write_text(text)
    with pytest.raises(LedgerError, match=says) as raised:
        ledger.load(str(path))
    assert str(path) in str(raised.value)
    assert path.read_text() == text
