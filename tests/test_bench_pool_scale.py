"""The pool-scale benchmark's pure parts: the simulated slots it advertises, the negotiation
cycles it reads from the negotiator's log, and the figures it computes from its rounds."""

import re

import pytest

from bench.pool_scale import (
    SIMULATED,
    SIMULATED_MEMORY_MB,
    Cycle,
    cycles_at,
    jobs_per_minute,
    parse_cycles,
    slot_ads,
    turnover,
)

#: A job of the benchmark asks for this much memory (tests/support/htcondor_pool.py).
JOB_MEMORY_MB = 64

CYCLE_LOG = """\
12/05/26 15:41:44.110 ---------- Finished Negotiation Cycle ----------
12/05/26 15:41:46.122 ---------- Started Negotiation Cycle ----------
12/05/26 15:41:46.122 Phase 1:  Obtaining ads from collector ...
12/05/26 15:41:46.165 Got ads: 2003 public and 0 private
12/05/26 15:41:46.165 Public ads include 1 submitter, 2002 startd
12/05/26 15:41:46.175     Request 00001.00000: autocluster 1 (request count 1 of 4)
12/05/26 15:41:46.176       Matched 1.0 submitter@cm <172.18.0.2:9618> preempting none <172.18.0.3:9618> slot1@pilot-a
12/05/26 15:41:46.177       Matched 1.1 submitter@cm <172.18.0.2:9618> preempting none <172.18.0.4:9618> slot1@pilot-b
12/05/26 15:41:46.179 ---------- Finished Negotiation Cycle ----------
12/05/26 15:41:48.192 ---------- Started Negotiation Cycle ----------
12/05/26 15:41:48.238 Public ads include 0 submitters, 2000 startds
12/05/26 15:41:48.251 ---------- Finished Negotiation Cycle ----------
12/05/26 23:59:59.990 ---------- Started Negotiation Cycle ----------
12/05/26 23:59:59.995 Phase 1:  Obtaining ads from collector ...
12/06/26 00:00:00.010 ---------- Finished Negotiation Cycle ----------
12/06/26 00:00:02.000 ---------- Started Negotiation Cycle ----------
12/06/26 00:00:02.040 Public ads include 1 submitter, 5000 startd
"""


def test_each_complete_cycle_gives_its_length_slots_and_matches() -> None:
    cycles = parse_cycles(CYCLE_LOG)
    assert [(round(cycle.seconds, 3), cycle.startds, cycle.matches) for cycle in cycles] == [
        (0.057, 2002, 2),
        (0.059, 2000, 0),
    ]


def test_a_cycle_without_its_count_of_startds_or_its_end_is_left_out() -> None:
    # the third cycle of the log says no count; the fourth never finishes
    assert all(cycle.startds in (2000, 2002) for cycle in parse_cycles(CYCLE_LOG))


def test_a_log_without_times_to_the_millisecond_gives_no_cycle() -> None:
    text = "12/05/26 15:41:46 ---------- Started Negotiation Cycle ----------\n"
    text += "12/05/26 15:41:46 Public ads include 1 submitter, 2 startd\n"
    text += "12/05/26 15:41:47 ---------- Finished Negotiation Cycle ----------\n"
    assert parse_cycles(text) == []


def test_a_level_holds_the_cycles_with_its_slots_and_up_to_the_pilots_own() -> None:
    cycles = [Cycle(0.01, startds, 0) for startds in (0, 1, 2, 3, 500, 502, 503)]
    assert [cycle.startds for cycle in cycles_at(cycles, 0, pilots=2)] == [0, 1, 2]
    assert [cycle.startds for cycle in cycles_at(cycles, 500, pilots=2)] == [500, 502]


def ads_of(text: str) -> list[dict[str, str]]:
    """Return the ads of condor_advertise -multiple text as attribute -> expression."""
    ads = []
    for block in text.split("\n\n"):
        if block.strip():
            ads.append(dict(line.split(" = ", 1) for line in block.splitlines()))
    return ads


def test_simulated_slots_have_names_of_their_own_and_are_unclaimed_static_slots() -> None:
    ads = ads_of(slot_ads(300, "172.18.0.2", "cm.example"))
    assert len(ads) == 300
    assert len({ad["Name"] for ad in ads}) == 300
    for ad in ads:
        assert ad["MyType"] == '"Machine"'
        assert ad["State"] == '"Unclaimed"'
        assert ad["SlotType"] == '"Static"'
        assert ad[SIMULATED] == "true"
        assert ad["UidDomain"] == '"cm.example"'
        assert re.fullmatch(r'"<172\.18\.0\.2:\d+>"', ad["MyAddress"])
        assert int(ad["ClassAdLifetime"]) >= 3600


def test_the_jobs_requirements_exclude_every_simulated_slot() -> None:
    assert SIMULATED_MEMORY_MB < JOB_MEMORY_MB
    memories = {ad["Memory"] for ad in ads_of(slot_ads(10, "10.0.0.1", "cm"))}
    assert memories == {str(SIMULATED_MEMORY_MB)}


def test_no_slots_give_an_empty_file() -> None:
    assert slot_ads(0, "10.0.0.1", "cm") == ""


def test_jobs_per_minute_and_turnover_of_a_round() -> None:
    # 6 jobs of 2 s on 2 pilots in 30 s: 3 jobs each, 10 s per job, 8 s of it beyond the run
    assert jobs_per_minute(6, 30.0) == 12.0
    assert turnover(6, 30.0, 2.0, pilots=2) == pytest.approx(8.0)
