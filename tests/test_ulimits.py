"""The ulimits key and the pilots' limits: parsing, the ceilings of the lowest hard limits, and the
fix named when the runtime refuses a limit."""

import pytest

from plancton.config.ulimits import lowest_hard_limits, parse_ulimits, pilot_ulimits, rlimit_fix
from plancton.engines.rlimit_refusal import limit_in_error


def test_ulimits_key() -> None:
    assert parse_ulimits({"nproc": "100:200", "nofile": 1024}) == (("nofile", 1024, 1024), ("nproc", 100, 200))
    assert parse_ulimits(None) == ()
    for bad, said in (({"nofiles": 1}, "unknown limit 'nofiles'"), ({"nofile": "9:3"}, "above the hard limit")):
        with pytest.raises(ValueError, match=said):
            parse_ulimits(bad)
    with pytest.raises(ValueError, match="soft:hard"):
        parse_ulimits({"nofile": True})


def test_default_limits_stay_within_the_lowest_hard_limits() -> None:
    ceilings = lowest_hard_limits({"nofile": 20000, "nproc": None}, {"nofile": 1048576, "nproc": 32768})
    assert ceilings == {"nofile": 20000, "nproc": 32768}
    assert pilot_ulimits((), ceilings) == (("nofile", 20000, 20000), ("nproc", 32768, 32768))
    # what the key sets is kept as it is, above the ceiling too
    assert pilot_ulimits((("nofile", 50000, 50000),), ceilings) == (("nofile", 50000, 50000), ("nproc", 32768, 32768))
    assert pilot_ulimits((), lowest_hard_limits({"nofile": None})) == ()


def test_an_rlimit_refusal_names_the_limit_and_the_fix() -> None:
    assert limit_in_error("runc create failed: error setting rlimit type 7: operation not permitted") == "nofile"
    assert limit_in_error("crun: setrlimit `RLIMIT_NPROC`: Operation not permitted: OCI permission denied") == "nproc"
    assert limit_in_error("no such image") is None
    fix = rlimit_fix("nofile", (("nofile", 1048576, 1048576),))
    assert "nofile=1048576:1048576" in fix and "ulimits: {nofile: 1024}" in fix
