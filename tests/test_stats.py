"""Unit tests of ``planctonctl stats``: plancton/cli/stats.py, the totals of plancton/control/overview.py."""

import datetime
import json

import pytest

from plancton.cli import planctonctl, stats
from plancton.control import ledger, overview
from plancton.control.ledger import CpuReading, Ending, GiveWay, Ledger, LoopAccount
from plancton.errors import PlanctonError

TODAY = datetime.date(2026, 12, 5)


@pytest.mark.parametrize(
    ("text", "day"),
    [("today", TODAY), ("7d", TODAY - datetime.timedelta(days=7)), ("2026-11-01", datetime.date(2026, 11, 1))],
)
def test_since_takes_a_date_today_or_days_back(text, day):
    assert stats.parse_since(text, TODAY) == day


@pytest.mark.parametrize("text", ["yesterday", "7", "-3d", "2026-13-01", ""])
def test_since_refuses_anything_else_with_the_forms_it_takes(text):
    with pytest.raises(PlanctonError, match=r"YYYY-MM-DD .* today, or a number of days back"):
        stats.parse_since(text, TODAY)


def a_ledger_of_ten_days() -> Ledger:
    book = Ledger()
    for back in reversed(range(10)):  # oldest first, as the daemon writes it
        day = TODAY - datetime.timedelta(days=back)
        loop = LoopAccount(
            day,
            interval=3600,
            lending=True,
            cpu=CpuReading("b:1", (10 - back) * 1800.0),
            given_way=GiveWay.KEYBOARD,
            started=2,
            ended={Ending.FINISHED: 1, Ending.OWNER: 1},
        )
        book = ledger.account(book, loop)
    return book


def test_the_periods_are_today_the_last_seven_days_and_all_time():
    data = overview.stats_data(a_ledger_of_ten_days(), TODAY, None)
    assert data["today"]["started"] == 2
    assert data["last_7_days"]["started"] == 14
    assert data["all_time"]["started"] == 20
    assert data["all_time"]["lent_seconds"] == 36000
    assert data["all_time"]["cpu_seconds"] == 9 * 1800.0
    assert data["first_day"] == "2026-11-26"
    assert len(data["days"]) == 10


def test_since_sums_the_days_from_that_day(tmp_path, capsys):
    ledger.save(str(tmp_path / "ledger.json"), a_ledger_of_ten_days())
    assert planctonctl.main(["--user", "--statedir", str(tmp_path), "stats", "--since", "2026-12-04", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["since"] == "2026-12-04"
    assert sorted(data["days"]) == ["2026-12-04", "2026-12-05"]
    assert data["total"]["given_way_seconds"] == {"keyboard": 7200}


def test_the_table_names_every_ending_and_reason(tmp_path, capsys):
    ledger.save(str(tmp_path / "ledger.json"), a_ledger_of_ten_days())
    assert planctonctl.main(["--user", "--statedir", str(tmp_path), "stats"]) == 0
    out = capsys.readouterr().out
    assert "last 7 days" in out
    for name in [*Ending, *GiveWay]:
        assert name.value in out
    assert "10h 0m" in out  # all time lent


def test_an_empty_state_folder_says_nothing_was_lent_yet(tmp_path, capsys):
    assert planctonctl.main(["--user", "--statedir", str(tmp_path), "stats"]) == 0
    assert "nothing lent yet" in capsys.readouterr().out


def test_a_damaged_ledger_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "ledger.json").write_text("{")
    assert planctonctl.main(["--user", "--statedir", str(tmp_path), "stats"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "ledger.json") in err
    assert len(err.strip().splitlines()) == 1
