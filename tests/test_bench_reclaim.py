"""Reclaim's analysis: Plancton's own share of the owner's CPU."""

import pytest

from bench.reclaim import machinery_split, own_share_parts


def test_the_own_share_is_the_pilots_and_the_extra_rest_of_the_host_over_the_owners_cpu() -> None:
    # pair 1: pilots 0.02 s, the rest of the host 0.30 s against 0.12 s alone, owner 16 s
    # pair 2: the rest of the host took less than alone: the noise may make a share negative
    pilots, machinery = own_share_parts([0.02, 0.0], [0.30, 0.10], [0.12, 0.14], [16.0, 8.0])
    assert pilots == pytest.approx([100 * 0.02 / 16.0, 0.0])
    assert machinery == pytest.approx([100 * 0.18 / 16.0, 100 * -0.04 / 8.0])
    assert [one + other for one, other in zip(pilots, machinery, strict=True)] == pytest.approx(
        [100 * 0.20 / 16.0, 100 * -0.04 / 8.0]
    )


def test_the_machinerys_part_splits_into_the_daemons_own_cpu_and_the_rest() -> None:
    # the machinery took 1.125% and 0.5% of the owner's CPU; the daemon itself 0.04 s of 16 s
    # and 0.06 s of 8 s: in the second pair the noise left less for the rest than the daemon took
    daemon, rest = machinery_split([1.125, 0.5], [0.04, 0.06], [16.0, 8.0])
    assert daemon == pytest.approx([0.25, 0.75])
    assert rest == pytest.approx([0.875, -0.25])
