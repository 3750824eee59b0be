"""The staged rollout's pure parts: each node's place in the window, and the health verdict."""

import statistics

from hypothesis import given
from hypothesis import strategies as st

from plancton.core.rollout import FAILURES_TO_REJECT, HealthSigns, Verdict, health_verdict, rollout_offset


@given(st.text(max_size=64), st.floats(1, 30 * 86400))
def test_a_node_takes_a_revision_inside_the_window_and_always_at_the_same_point(name: str, window: float) -> None:
    offset = rollout_offset(name, window)
    assert 0 <= offset < window
    assert rollout_offset(name, window) == offset


def test_a_farm_spreads_over_the_window() -> None:
    offsets = [rollout_offset(f"node{index:03d}.farm.example.org", 7200.0) for index in range(200)]
    first_quarter = sum(offset < 1800 for offset in offsets)
    assert 30 <= first_quarter <= 70  # about a quarter of the farm goes in the first quarter
    assert 3000 <= statistics.mean(offsets) <= 4200


def test_a_pilot_running_under_the_revision_passes_it_at_once() -> None:
    signs = HealthSigns(elapsed=5, failures=FAILURES_TO_REJECT, new_pilot_ran=True)
    assert health_verdict(signs, watch=600) is Verdict.PASSED


def test_pilots_that_cannot_start_where_they_ran_before_reject_the_revision() -> None:
    assert health_verdict(HealthSigns(elapsed=5, image_unavailable=True), watch=600) is Verdict.REJECTED
    assert health_verdict(HealthSigns(elapsed=5, failures=FAILURES_TO_REJECT), watch=600) is Verdict.REJECTED
    assert health_verdict(HealthSigns(elapsed=5, failures=FAILURES_TO_REJECT - 1), watch=600) is Verdict.WATCHING


def test_a_node_that_failed_before_the_revision_too_does_not_blame_it() -> None:
    signs = HealthSigns(elapsed=5, image_unavailable=True, healthy_before=False)
    assert health_verdict(signs, watch=600) is Verdict.WATCHING
    assert health_verdict(HealthSigns(elapsed=600, image_unavailable=True, healthy_before=False), 600) is Verdict.PASSED


@given(st.floats(0, 1e5), st.floats(0, 1e5))
def test_the_watch_ends_passed_when_nothing_was_against_the_revision(elapsed: float, watch: float) -> None:
    verdict = health_verdict(HealthSigns(elapsed=elapsed), watch)
    assert verdict is (Verdict.PASSED if elapsed >= watch else Verdict.WATCHING)


def test_a_revision_none_of_whose_pilots_was_tried_has_shown_nothing_and_stays_watched() -> None:
    # the pool stayed full of the previous revision's pilots: the watch's end proves nothing
    assert health_verdict(HealthSigns(elapsed=86400, new_pilot_tried=False), watch=600) is Verdict.WATCHING
    assert health_verdict(HealthSigns(elapsed=600, new_pilot_tried=True), watch=600) is Verdict.PASSED
    signs = HealthSigns(elapsed=86400, new_pilot_tried=False, new_pilot_ran=True)
    assert health_verdict(signs, watch=600) is Verdict.PASSED
