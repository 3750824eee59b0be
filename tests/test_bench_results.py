"""The benchmark's results file: each scenario keeps the run that measured it (commit, tree,
date, machine, load), a run of some scenarios keeps the others' figures, and the tables of
docs/benchmarks.md are those that ``bench/run --show --markdown`` prints."""

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench import results

REPO = Path(__file__).resolve().parent.parent
ORDER = ["refill", "fill", "reclaim"]


def scenario(median: float) -> dict[str, Any]:
    figure = {"what": "kill to fresh pilot running", "unit": "s", "target": "", "met": None, "value": median}
    return {"started": "2026-12-05T06:30:05+00:00", "seconds": 20.0, "error": None, "figures": [figure]}


def run_record(date: str, commit: str = "a" * 40) -> dict[str, Any]:
    return {"date": date, "command": "bench/run --only refill", "commit": commit, "clean": True, "changed": []}


def test_a_run_of_one_scenario_keeps_the_figures_and_runs_of_the_others() -> None:
    both = {"refill": scenario(0.36), "reclaim": scenario(8.1)}
    first = results.merge(None, run_record("2026-12-04T21:26:06+00:00"), both, ORDER)
    second = results.merge(first, run_record("2026-12-05T06:30:00+00:00", "b" * 40), {"refill": scenario(0.28)}, ORDER)
    assert second["scenarios"]["refill"]["figures"][0]["value"] == 0.28
    assert second["scenarios"]["reclaim"] == first["scenarios"]["reclaim"]
    assert second["runs"][second["scenarios"]["refill"]["run"]]["commit"] == "b" * 40
    assert second["runs"][second["scenarios"]["reclaim"]["run"]]["commit"] == "a" * 40


def test_runs_that_no_scenario_refers_to_are_dropped_and_scenarios_keep_their_order() -> None:
    first = results.merge(None, run_record("2026-12-04T21:26:06+00:00"), {"reclaim": scenario(8.1)}, ORDER)
    both = {"reclaim": scenario(8.0), "refill": scenario(0.3)}
    second = results.merge(first, run_record("2026-12-05T06:30:00+00:00"), both, ORDER)
    assert list(second["runs"]) == ["2026-12-05T06:30:00+00:00"]
    assert list(second["scenarios"]) == ["refill", "reclaim"]


def test_two_runs_dated_the_same_second_stay_apart() -> None:
    date = "2026-12-05T06:30:00+00:00"
    first = results.merge(None, run_record(date), {"refill": scenario(0.3)}, ORDER)
    second = results.merge(first, run_record(date, "b" * 40), {"fill": scenario(2.5)}, ORDER)
    assert {second["scenarios"][name]["run"] for name in ("refill", "fill")} == {date, f"{date}#2"}


def test_a_file_of_one_run_reads_as_a_run_whose_commit_was_not_recorded() -> None:
    legacy = {
        "date": "2026-12-04T21:26:06+00:00",
        "command": "bench/run",
        "quick": False,
        "shared_host": False,
        "machine": {"cores": 2, "load_average_at_start": [0.78, 1.37, 1.22], "load_average_at_end": [0.1, 0.2, 0.8]},
        "scenarios": {"refill": scenario(0.36)},
    }
    document = results.upgrade(legacy)
    run = document["runs"][document["scenarios"]["refill"]["run"]]
    assert run["commit"] is None and run["clean"] is None
    assert run["load_average_at_start"] == [0.78, 1.37, 1.22]
    assert run["machine"] == {"cores": 2}
    shown = results.provenance_table(document)
    assert "not recorded" in shown and "bench/run" in shown


def test_the_provenance_table_names_each_scenarios_commit_tree_and_load() -> None:
    record = run_record("2026-12-05T06:30:00+00:00") | {"quick": True, "machine": {"cores": 2}}
    measured = {"refill": scenario(0.28) | {"load_average_at_start": [1.5, 1.0, 0.5]}}
    table = results.provenance_table(results.merge(None, record, measured, ORDER), markdown=True)
    row = next(line for line in table.splitlines() if line.startswith("| refill"))
    assert row == "| refill | 2026-12-05 06:30 | aaaaaaaaaaaa | clean | yes | 1.50 1.00 0.50 | 20 s |"


def git(folder: Path, *args: str) -> None:
    who = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    environment = os.environ | who
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, env=environment)


def test_the_source_is_the_commit_and_whether_anything_but_the_runs_own_files_changed(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results.json").write_text("{}\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    written = [str(tmp_path / "results.json"), str(tmp_path / "plot.png")]
    (tmp_path / "results.json").write_text('{"scenarios": {}}\n')
    (tmp_path / "plot.png").write_bytes(b"png")
    source = results.source_of(str(tmp_path), written)
    assert source["clean"] is True and len(source["commit"]) == 40
    (tmp_path / "code.py").write_text("x = 2\n")
    (tmp_path / "new.py").write_text("")
    assert results.source_of(str(tmp_path), written) | {"commit": ""} == {
        "commit": "",
        "clean": False,
        "changed": ["code.py", "new.py"],
    }


def test_a_folder_outside_git_has_no_recorded_source(tmp_path: Path) -> None:
    assert results.source_of(str(tmp_path)) == {"commit": None, "clean": None, "changed": []}


def test_a_file_that_is_not_results_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"results\.json is not a results file"):
        results.load(str(path))


@pytest.mark.parametrize("name", ["results.json", "results-modern-host.json"])
def test_the_docs_show_the_tables_of_each_results_file(name: str) -> None:
    document = results.load(str(REPO / "bench" / name))
    assert document is not None
    docs = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    for table in (results.figures_table(document, True), results.provenance_table(document, True)):
        shown = f"bench/run --show --markdown --results bench/{name}"
        assert table in docs, f"docs/benchmarks.md lacks this table of {shown}:\n{table}"


def test_a_copy_without_git_has_the_source_recorded_where_it_was_copied_from(tmp_path: Path) -> None:
    recorded = {"commit": "c" * 40, "clean": True, "changed": []}
    (tmp_path / results.SOURCE_FILE).write_text(json.dumps(recorded))
    assert results.source_of(str(tmp_path)) == recorded
