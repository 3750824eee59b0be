"""The farm tier's fixtures: one farm for the whole session, built from the number of nodes
that ``tests/farm/run`` was given, and removed afterwards; the figures the tests measured,
printed at the end and written to ``$PLANCTON_FARM_RESULTS`` when the runner names a file.

The ordinary tier (``pytest`` from the checkout's top) does not collect the farm's tests:
they run only under ``tests/farm/run``, which uses this folder's ``farm.ini``.
"""

import datetime
import json
import os
import platform
import secrets
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.results import source_of
from tests.farm.farm import Farm
from tests.farm.layout import FarmLayout, ledger_path, run_folder
from tests.farm.ledger import RUN_MARK, Ledger
from tests.farm.node import Node

FARM_INI = Path(__file__).with_name("farm.ini")
CHECKOUT = Path(__file__).resolve().parent.parent.parent
#: The tests that need no farm, which the ordinary tier runs too.
UNIT_TESTS = frozenset({"test_layout.py", "test_figures.py"})
#: What the tests measured, by name: printed at the end, and written to the results file.
FIGURES: dict[str, Any] = {}
SESSION_BEGUN = pytest.StashKey[float]()
SESSION_STARTED = pytest.StashKey[str]()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave the farm's tests to the farm tier's own runner."""
    if config.inipath != FARM_INI and collection_path.name.startswith("test_"):
        return collection_path.name not in UNIT_TESTS
    return None


@pytest.fixture(scope="session")
def farm() -> Iterator[Farm]:
    """The farm: its nodes ($PLANCTON_FARM_NODES, 3 by default) run their daemons; everything
    is removed afterwards, also after a failure or Ctrl-C."""
    run_id = os.environ.setdefault(RUN_MARK, secrets.token_hex(3))
    layout = FarmLayout(run_id, int(os.environ.get("PLANCTON_FARM_NODES", "3")), run_folder(run_id))
    FIGURES["nodes"] = layout.nodes
    begun = time.monotonic()
    started = Farm.start(layout, Ledger(ledger_path(run_id)))
    FIGURES["farm built and every daemon started, s"] = round(time.monotonic() - begun, 1)
    try:
        yield started
    finally:
        begun = time.monotonic()
        started.stop()
        FIGURES["farm stopped and removed, s"] = round(time.monotonic() - begun, 1)


@pytest.fixture
def site_policy_restored(farm: Farm) -> Iterator[None]:
    """Commit the site's usual configuration afterwards and have every node take it."""
    yield
    farm.commit_config("Back to the site's usual configuration")
    farm.on_every_node(Node.update)


@pytest.fixture(autouse=True)
def logs_of_a_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a farm test that failed, print what each node shows (:meth:`Node.report`;
    pytest shows it with the failure)."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed or "farm" not in request.fixturenames:
        return
    farm: Farm = request.getfixturevalue("farm")
    for node in farm.nodes:
        print(node.report())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on its test, for :func:`logs_of_a_failure`."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the tests measured."""
    if FIGURES:
        terminalreporter.section("farm figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note when the session began, for the figures: its start and its length."""
    session.stash[SESSION_BEGUN] = time.monotonic()
    session.stash[SESSION_STARTED] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the figures to $PLANCTON_FARM_RESULTS, when it names a file, with the session's
    start, length and source (commit, and whether the tree was clean), the kernel, and how
    many tests passed and failed."""
    path = os.environ.get("PLANCTON_FARM_RESULTS")
    if path and FIGURES:
        FIGURES["started"] = session.stash[SESSION_STARTED]
        FIGURES.update(source_of(str(CHECKOUT), [path]))
        FIGURES["kernel"] = platform.release()
        FIGURES["tests session, s"] = round(time.monotonic() - session.stash[SESSION_BEGUN], 1)
        stats = session.config.pluginmanager.getplugin("terminalreporter").stats
        for outcome in ("passed", "failed", "error", "skipped"):
            FIGURES[f"tests {outcome}"] = len(stats.get(outcome, []))
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(FIGURES, handle, indent=2, sort_keys=True)
            handle.write("\n")
