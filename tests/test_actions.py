"""The action runner: one action per pilot at a time, starts counted until done, errors logged."""

import logging
import threading
from collections.abc import Iterator

import pytest

from plancton.daemon.actions import ActionRunner
from plancton.errors import PilotError
from tests.support.services import poll


@pytest.fixture
def runner() -> Iterator[ActionRunner]:
    actions = ActionRunner(2, 2)
    yield actions
    actions.shutdown()


def test_a_second_action_on_a_busy_pilot_is_dropped(runner: ActionRunner) -> None:
    release = threading.Event()
    calls: list[str] = []

    def first() -> None:
        calls.append("first")
        release.wait(10)

    runner.act("pilot-a", first, slow=True)
    runner.act("pilot-a", lambda: calls.append("second"))
    runner.act("pilot-b", lambda: calls.append("other pilot"))
    busy, starting = runner.under_way()
    assert "pilot-a" in busy and starting == 0
    release.set()
    poll(lambda: runner.under_way() == (frozenset(), 0), 10, "every action to end")
    assert sorted(calls) == ["first", "other pilot"]


def test_starts_count_as_under_way_until_they_return(runner: ActionRunner) -> None:
    release = threading.Event()

    def start() -> None:
        release.wait(10)

    runner.start(start)
    runner.start(start)
    assert runner.under_way()[1] == 2
    release.set()
    poll(lambda: runner.under_way()[1] == 0, 10, "both starts to return")


def test_errors_are_logged_and_the_pilot_is_free_again(runner: ActionRunner, caplog: pytest.LogCaptureFixture) -> None:
    def refused() -> None:
        raise PilotError("docker stop: refused")

    def broken() -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="plancton.daemon.actions"):
        runner.act("pilot-a", refused)
        runner.start(broken)
        poll(lambda: runner.under_way() == (frozenset(), 0), 10, "both actions to end")
    assert "docker stop: refused" in caplog.text
    assert "unexpected error starting a pilot" in caplog.text
