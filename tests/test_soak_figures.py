"""The soak's judgement and its table of figures (tests/soak.py), on figures as --output writes them."""

import datetime
from pathlib import Path
from typing import Any

import pytest

from tests import soak


def figures(**changes: Any) -> dict[str, Any]:
    """Return the figures of a healthy 30-minute run, with some changed."""
    run = {
        "started": "2026-12-05T13:02:11Z",
        "commit": "7b66ebd0c5f1a2b3",
        "clean": True,
        "kernel": "6.1.0-27-amd64",
        "minutes": 30.0,
        "pilots_started": 354,
        "exits_handled": 350,
        "kills": 40,
        "pauses": 51,
        "reloads": 29,
        "engine_restarts": 2,
        "engine_restarted_through": "dockerd",
        "presence_changes": None,
        "rss_mb_start": 30.8,
        "rss_mb_end": 31.9,
        "fds_start": 32,
        "fds_end": 33,
        "fds_peak": 40,
        "sockets_floors_by_third": [22, 22],
        "sockets_judged": True,
        "other_fds_floors_by_third": [10, 10],
        "orphan_containers": 0,
        "daemon_running_at_end": True,
        "errors_logged": 4,
    }
    return run | changes


@pytest.mark.parametrize(
    "changes",
    [
        {"rss_mb_end": 34.0},
        {"other_fds_floors_by_third": [10, 11]},
        {"sockets_floors_by_third": [22, 23]},
        {"orphan_containers": 1},
        {"daemon_running_at_end": False},
    ],
)
def test_a_leak_an_orphan_or_a_dead_daemon_fails_the_soak(changes: dict[str, Any]) -> None:
    assert soak.healthy(figures())
    assert not soak.healthy(figures(**changes))


def test_engine_connections_of_a_short_run_are_not_judged() -> None:
    assert soak.healthy(figures(minutes=3.0, sockets_judged=False, sockets_floors_by_third=[12, 20]))


def test_the_table_has_a_column_a_run_headed_by_its_length_date_and_commit() -> None:
    guest = figures(commit=None, clean=None, presence_changes=41, engine_restarted_through="systemd", started=None)
    table = soak.figures_table([figures(), guest]).splitlines()
    assert table[0] == "| figure | 30 min, 2026-12-05, `7b66ebd` | 30 min, date not recorded, commit not recorded |"
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    rows = {label: shown for label, *shown in cells}
    assert rows["daemon RSS, start → end (limit +10%)"][0] == "30.8 → 31.9 MB (+3.6%)"
    assert rows["reloads / engine restarts"][1] == "29 / 2 (through systemd)"
    assert rows["changes of the person's presence"] == ["none (no --presence)", "41"]
    assert rows["verdict"] == ["no leak, no orphan", "no leak, no orphan"]
    assert len(table) == 2 + len(soak.TABLE_ROWS)


def test_the_moments_the_engine_did_not_answer_come_from_the_daemons_log() -> None:
    began = datetime.datetime(2026, 12, 5, 12, 0, 0).timestamp()
    log = "\n".join(
        [
            "2026-12-05 11:59:50,000 ERROR cannot start a pilot: the Docker socket does not answer as an engine (x)",
            "2026-12-05 12:00:30,500 INFO started pilot soak-1",
            "2026-12-05 12:10:30,250 ERROR cannot start a pilot: the Docker socket does not answer as an engine (x)",
            "  a continued line naming does not answer as an engine, without a time",
        ]
    )
    assert soak.engine_losses(log, began) == [pytest.approx(630.25)]


def test_a_floor_after_the_engine_stopped_answering_is_left_out() -> None:
    """The daemon drops its connections when the engine stalls: a dip in the first third is
    no floor to judge the last third by."""
    samples = [(float(second), 4 if 100 <= second < 130 else 25) for second in range(900)]
    assert soak.descriptor_floors(samples, [], 900.0) == (4, 25)
    assert soak.descriptor_floors(samples, [100.0], 900.0) == (25, 25)


def test_a_healthy_run_leaves_no_folder_and_a_failed_one_keeps_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy_run, leaking_run, crashed_run = (tmp_path / name for name in ("healthy", "leaking", "crashed"))
    for folder in (healthy_run, leaking_run, crashed_run):
        folder.mkdir()
        (folder / "plancton.log").write_text("a log\n", encoding="utf-8")
    soak.remove_or_keep(str(healthy_run), figures())
    soak.remove_or_keep(str(leaking_run), figures(orphan_containers=1))
    soak.remove_or_keep(str(crashed_run), None)
    assert not healthy_run.exists()
    assert (leaking_run / "plancton.log").exists() and (crashed_run / "plancton.log").exists()
    said = capsys.readouterr().err
    assert f"kept in {leaking_run}" in said and f"kept in {crashed_run}" in said
