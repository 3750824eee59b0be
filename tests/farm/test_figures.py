"""The farm tier's figures table (tests/farm/figures.py), on figures as ``--results`` writes them."""

import json
from pathlib import Path

import pytest

from tests.farm import figures


def test_a_column_a_run_headed_by_its_nodes_date_and_commit_and_a_row_a_figure() -> None:
    three = {"nodes": 3, "started": "2026-12-05T16:00:00Z", "commit": "18b15090a6", "clean": True, "kernel": "6",
             "owner back to pilots paused, s": 0.2, "tests passed": 18}  # fmt: skip
    five = {"nodes": 5, "commit": "63ab17f000", "clean": False, "owner back to pilots paused, s": 0.3,
            "staged rollout, s": {"ws-001": [37.7, 38.7], "ws-002": [4.6, 5.6]}}  # fmt: skip
    assert figures.table([three, five]).splitlines() == [
        "| what | 3 nodes, 2026-12-05, `18b1509` | 5 nodes, date not recorded, `63ab17f` (changed tree) |",
        "|---|---|---|",
        "| nodes | 3 | 5 |",
        "| owner back to pilots paused, s | 0.2 | 0.3 |",
        "| staged rollout, s | not measured | ws-001: 37.7, 38.7; ws-002: 4.6, 5.6 |",
        "| tests passed | 18 | not measured |",
    ]


def test_a_file_that_is_no_results_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([1, 2]), encoding="utf-8")
    assert figures.main([str(listing)]) == 1
    assert f"{listing}: not a results file" in capsys.readouterr().err
    assert figures.main([str(tmp_path / "missing.json")]) == 1
