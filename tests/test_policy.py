"""Unit and property tests of the pure decision core (no Docker, no clock, no files)."""

import itertools
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plancton.config.loader import parse
from plancton.config.schema import Config, HostFacts
from plancton.core.holds import Hold
from plancton.core.modes import Mode
from plancton.core.policy import (
    DrainVerdict,
    HostSample,
    Memory,
    PilotView,
    Plan,
    Presence,
    StartHistory,
    decide,
    drain_verdict,
)

GIB = 1024**3


def make_config(**values: object) -> Config:
    """Return a validated config with these keys changed (max_docks resolved for 4 CPUs)."""
    config, _ = parse(values, HostFacts(ncpus=4, ram_bytes=16 * GIB, swap_bytes=0))
    return config


def idle_host(ncpus: int = 4, pilots_cores: float = 0.0, owner_cores: float = 0.0, **extra: object) -> HostSample:
    """A host whose owner uses ``owner_cores`` while the pilots use ``pilots_cores``."""
    values: dict[str, object] = {
        "ncpus": ncpus,
        "busy_cores": pilots_cores + owner_cores,
        "pilots_cores": pilots_cores,
        "available_bytes": 12 * GIB,
    }
    values.update(extra)
    return HostSample(**values)  # type: ignore[arg-type]


def running(count: int, first_age: float = 100.0, state: str = "running") -> list[PilotView]:
    """Pilots p0..pN-1, p0 the oldest."""
    return [PilotView(id=f"p{index}", state=state, age=first_age - index) for index in range(count)]


def once(
    sample: HostSample,
    pilots: list[PilotView],
    config: Config,
    mode: Mode = Mode.ACTIVE,
    now: float = 1000.0,
    memory: Memory | None = None,
    history: StartHistory | None = None,
) -> tuple[Plan, Memory]:
    return decide(sample, pilots, config, mode, now, memory or Memory(), history or StartHistory())


def test_idle_host_fills_the_pool_up_to_docks_per_loop() -> None:
    plan, _ = once(idle_host(), [], make_config(max_docks=6, docks_per_loop=4))
    assert plan.start == 4
    plan, _ = once(idle_host(), running(4), make_config(max_docks=6, docks_per_loop=4))
    assert plan.start == 2
    plan, _ = once(idle_host(), running(6), make_config(max_docks=6))
    assert plan.start == 0
    assert any("pool full" in reason for reason in plan.reasons)


def test_default_pool_starts_one_pilot_on_a_two_core_host() -> None:
    config, _ = parse({}, HostFacts(ncpus=2, ram_bytes=8 * GIB, swap_bytes=0))
    assert config.pool_size == 1
    plan, _ = once(idle_host(ncpus=2), [], config)
    assert plan.start == 1


def test_busy_pilots_are_not_the_owner() -> None:
    """Pilots at 100% on every core: the owner is idle, nothing is paused or stopped."""
    config = make_config(max_docks=4)
    plan, memory = once(idle_host(ncpus=4, pilots_cores=4.0), running(4), config)
    assert not memory.owner_busy
    assert plan.pause == () and plan.stop == () and plan.kill == ()


def test_owner_load_is_net_of_pilots() -> None:
    sample = idle_host(ncpus=4, pilots_cores=3.0, owner_cores=1.0)
    assert sample.owner_cores == 1.0
    assert sample.owner_percent == 25.0
    assert HostSample(ncpus=2, busy_cores=0.5, pilots_cores=0.9, available_bytes=GIB).owner_cores == 0.0
    # Plancton's own CPU is not the owner's either
    with_daemon = HostSample(ncpus=2, busy_cores=1.0, pilots_cores=0.3, available_bytes=GIB, own_cores=0.2)
    assert with_daemon.owner_cores == pytest.approx(0.5)


def test_owner_busy_pauses_youngest_after_pause_delay_then_stops_after_grace_kill() -> None:
    config = make_config(max_docks=4, pause_delay=5, grace_kill=60, cpus_per_dock=1)
    pilots = running(4)
    busy = idle_host(ncpus=4, pilots_cores=0.2, owner_cores=3.8)
    plan, memory = once(busy, pilots, config, now=0.0)
    assert memory.owner_busy and plan.pause == ()
    assert plan.start == 0
    plan, memory = once(busy, pilots, config, now=5.0, memory=memory)
    # 0.2 cores left for 1-CPU pilots: every pilot is paused, youngest first
    assert plan.pause == ("p3", "p2", "p1", "p0")
    paused = running(4, state="paused")
    plan, memory = once(busy, paused, config, now=30.0, memory=memory)
    assert plan.stop == ()
    plan, memory = once(busy, paused, config, now=65.0, memory=memory)
    assert {pilot for pilot, _ in plan.stop} == {"p0", "p1", "p2", "p3"}
    assert {reason for _, reason in plan.stop} == {"owner reclaim"}


def test_partial_owner_load_pauses_only_what_does_not_fit() -> None:
    config = make_config(max_docks=4, pause_delay=0, owner_busy_percent=40, owner_idle_percent=20)
    sample = idle_host(ncpus=4, pilots_cores=2.0, owner_cores=2.0)
    plan, _ = once(sample, running(4), config)
    assert plan.pause == ("p3", "p2")


def test_owner_idle_again_within_grace_kill_resumes_paused_pilots() -> None:
    config = make_config(max_docks=2, pause_delay=0, grace_kill=60)
    busy = idle_host(ncpus=2, owner_cores=2.0)
    plan, memory = once(busy, running(2), config, now=0.0)
    assert plan.pause == ("p1", "p0")
    plan, memory = once(busy, running(2, state="paused"), config, now=1.0, memory=memory)
    assert plan.pause == () and plan.stop == ()
    plan, memory = once(idle_host(ncpus=2), running(2, state="paused"), config, now=20.0, memory=memory)
    assert plan.unpause == ("p0", "p1")
    assert plan.stop == () and plan.start == 0


def test_no_spawn_inside_grace_spawn_after_the_owner_was_busy() -> None:
    config = make_config(max_docks=2, pause_delay=5, grace_spawn=60)
    busy = idle_host(ncpus=2, owner_cores=2.0)
    _, memory = once(busy, [], config, now=0.0)
    plan, memory = once(idle_host(ncpus=2), [], config, now=10.0, memory=memory)
    assert plan.start == 0
    plan, memory = once(idle_host(ncpus=2), [], config, now=69.0, memory=memory)
    assert plan.start == 0
    assert any("grace_spawn" in reason for reason in plan.reasons)
    plan, _ = once(idle_host(ncpus=2), [], config, now=70.5, memory=memory)
    assert plan.start == 2


def test_a_short_spike_does_not_start_grace_spawn() -> None:
    config = make_config(max_docks=2, pause_delay=5, grace_spawn=60)
    _, memory = once(idle_host(ncpus=2, owner_cores=2.0), [], config, now=0.0)
    plan, _ = once(idle_host(ncpus=2), [], config, now=1.0, memory=memory)
    assert plan.start == 2


def test_force_start_skips_grace_spawn() -> None:
    config = make_config(max_docks=2, pause_delay=0, grace_spawn=600)
    _, memory = once(idle_host(ncpus=2, owner_cores=2.0), [], config, now=0.0)
    plan, memory = once(idle_host(ncpus=2), [], config, now=1.0, memory=memory)
    assert plan.start == 0
    plan, _ = once(idle_host(ncpus=2), [], config, now=2.0, memory=memory, history=StartHistory(spawn_now=True))
    assert plan.start == 2


def test_drain_and_force_stop() -> None:
    config = make_config(max_docks=4)
    plan, _ = once(idle_host(), running(2), config, mode=Mode.DRAINING)
    assert plan.start == 0 and plan.stop == () and not plan.exit_daemon
    plan, _ = once(idle_host(), running(2), config, mode=Mode.FORCE_STOP)
    assert plan.start == 0
    assert plan.stop == (("p1", "force-stop"), ("p0", "force-stop"))
    plan, _ = once(idle_host(), running(1), config, mode=Mode.DRAIN_STOP)
    assert not plan.exit_daemon and plan.start == 0
    plan, _ = once(idle_host(), [], config, mode=Mode.DRAIN_STOP)
    assert plan.exit_daemon


def test_memory_floor_kills_enough_youngest_pilots_in_one_step() -> None:
    config = make_config(max_docks=6, mem_floor="2G", max_dock_mem="1G")
    short = idle_host(available_bytes=int(0.5 * GIB))
    plan, _ = once(short, running(6), config)
    # 1.5 GiB short with 1 GiB pilots: two pilots go at once, the two youngest
    assert plan.kill == (("p5", "memory"), ("p4", "memory"))
    assert plan.start == 0


def test_memory_pressure_kills_the_youngest_pilot() -> None:
    config = make_config(max_docks=3, memory_pressure_percent=30)
    plan, _ = once(idle_host(memory_pressure=45.0), running(3), config)
    assert plan.kill == (("p2", "memory"),)


def test_ttl_stops_only_old_pilots() -> None:
    config = make_config(max_docks=2, max_ttl=50)
    pilots = [PilotView("old", "running", 51.0), PilotView("young", "running", 10.0)]
    plan, _ = once(idle_host(), pilots, config)
    assert plan.stop == (("old", "ttl"),)
    assert plan.start == 1  # the pool is refilled around the leaving pilot


def test_finished_and_stuck_pilots_are_removed() -> None:
    pilots = [
        PilotView("done", "exited", 5.0),
        PilotView("dead", "dead", 5.0),
        PilotView("stuck", "created", 31.0),
        PilotView("fresh", "created", 1.0),
    ]
    plan, _ = once(idle_host(), pilots, make_config(max_docks=2))
    assert set(plan.remove) == {"done", "dead", "stuck"}
    assert plan.start == 1


def test_pilots_stopped_for_a_busy_owner_are_removed_once_it_is_idle() -> None:
    config = make_config(max_docks=2, pause_delay=0, grace_kill=60, grace_spawn=30)
    busy, idle = idle_host(ncpus=2, owner_cores=2.0), idle_host(ncpus=2)
    stopped = [PilotView("p0", "exited", 70.0), PilotView("p1", "exited", 70.0)]
    plan, memory = once(busy, stopped, config, now=0.0)
    assert plan.remove == () and plan.start == 0
    assert "removing 2 finished pilots once it is idle" in " ".join(plan.reasons)
    plan, memory = once(idle, stopped, config, now=1.0, memory=memory)
    assert set(plan.remove) == {"p0", "p1"}
    # force-stop and drain-stop remove them at once, busy owner or not
    plan, _ = once(busy, stopped, config, mode=Mode.FORCE_STOP, now=0.0)
    assert set(plan.remove) == {"p0", "p1"}


def test_backoff_and_start_rate_hold_spawns() -> None:
    config = make_config(max_docks=4, max_starts_per_minute=3)
    plan, _ = once(idle_host(), [], config, now=100.0, history=StartHistory(backoff_until=110.0))
    assert plan.start == 0
    assert any("backing off" in reason for reason in plan.reasons)
    plan, _ = once(idle_host(), [], config, now=100.0, history=StartHistory(recent_starts=(30.0, 90.0)))
    # one start within the last minute leaves room for two of the three allowed
    assert plan.start == 2


def test_image_change_replaces_only_when_asked() -> None:
    pilots = [PilotView("a", "running", 10.0, image="old:1")]
    plan, _ = once(idle_host(), pilots, make_config(max_docks=1, docker_image="new:2"))
    assert plan.stop == ()
    plan, _ = once(idle_host(), pilots, make_config(max_docks=1, docker_image="new:2", replace_on_image_change=True))
    assert plan.stop == (("a", "image changed"),)


def test_pilots_already_stopping_are_not_counted_or_acted_on() -> None:
    pilots = [PilotView("leaving", "running", 10.0, stopping=True)]
    plan, _ = once(idle_host(), pilots, make_config(max_docks=1), mode=Mode.FORCE_STOP)
    assert plan.stop == ()


# -- spares -------------------------------------------------------------------------------


def spare(pilot_id: str = "s0", fresh: bool = True, age: float = 600.0, stopping: bool = False) -> PilotView:
    """A spare created ``age`` seconds ago, not started."""
    return PilotView(pilot_id, "created", age, stopping=stopping, spare=True, fresh=fresh)


def test_a_full_pool_gets_one_spare_that_is_no_pilot_of_the_pool() -> None:
    config = make_config(max_docks=3)
    plan, _ = once(idle_host(), running(1), config)
    assert (plan.start, plan.prepare) == (2, 1)  # full once these start
    plan, _ = once(idle_host(), [*running(3), spare()], config)
    assert (plan.start, plan.prepare, plan.remove) == (0, 0, ())  # an old spare is no failed start
    plan, _ = once(idle_host(), [*running(2), spare()], config)
    assert plan.start_spares == ("s0",) and plan.start == 0


def test_a_pilots_end_starts_the_spare_and_no_new_pilot() -> None:
    ended = PilotView("p2", "exited", 50.0)
    plan, _ = once(idle_host(), [*running(2), ended, spare()], make_config(max_docks=3))
    assert plan.remove == ("p2",) and plan.start_spares == ("s0",) and plan.start == 0
    assert plan.prepare == 0  # the next spare is created once this one has started


def test_a_stale_spare_is_removed_and_a_new_pilot_created_instead() -> None:
    plan, _ = once(idle_host(), [*running(2), spare(fresh=False)], make_config(max_docks=3))
    assert plan.remove == ("s0",) and plan.start_spares == () and plan.start == 1
    assert any("configuration or image changed" in reason for reason in plan.reasons)


def test_a_spare_being_started_or_created_is_left_alone_and_not_made_twice() -> None:
    config = make_config(max_docks=3)
    plan, _ = once(idle_host(), [*running(3), spare(stopping=True)], config)
    assert (plan.start, plan.prepare, plan.remove, plan.start_spares) == (0, 0, (), ())


@pytest.mark.parametrize("mode", [Mode.DRAINING, Mode.DRAIN_STOP, Mode.FORCE_STOP])
def test_every_mode_but_active_removes_the_spare(mode: Mode) -> None:
    plan, _ = once(idle_host(), [spare()], make_config(max_docks=3), mode=mode)
    assert plan.remove == ("s0",) and plan.prepare == 0 and plan.start_spares == ()
    assert not plan.exit_daemon  # drain-stop ends only once the spare is gone too
    plan, _ = once(idle_host(), [], make_config(max_docks=3), mode=mode)
    assert plan.prepare == 0


def test_no_spare_while_pilots_may_not_start_or_when_turned_off() -> None:
    busy = idle_host(owner_cores=4.0)
    plan, _ = once(busy, running(3), make_config(max_docks=3), memory=Memory(owner_busy=True, owner_since=990.0))
    assert plan.prepare == 0
    plan, _ = once(busy, [*running(3), spare()], make_config(max_docks=3), memory=Memory(owner_busy=True))
    assert plan.remove == ()  # kept for when the owner leaves
    plan, _ = once(idle_host(), [*running(3), spare()], make_config(max_docks=3, spare_pilot=False))
    assert plan.remove == ("s0",) and plan.prepare == 0
    plan, _ = once(idle_host(), [], make_config(max_docks=0))
    assert plan.prepare == 0


# -- holds: what held pilots back, for metrics --------------------------------------------


def holds_once(
    pilots: int,
    mode: Mode = Mode.ACTIVE,
    presence: Presence | None = None,
    owner_cores: float = 0.0,
    available: int = 12 * GIB,
    memory: Memory | None = None,
    history: StartHistory | None = None,
    **keys: object,
) -> set[Hold]:
    """Decide once for ``pilots`` running pilots (max_docks 2) and return the plan's holds."""
    config = make_config(max_docks=2, **keys)
    sample = idle_host(owner_cores=owner_cores, available_bytes=available)
    plan, _ = decide(
        sample,
        running(pilots),
        config,
        mode,
        1000.0,
        memory or Memory(),
        history or StartHistory(),
        presence or Presence(),
    )
    return set(plan.holds)


def test_the_plan_names_what_held_the_pilots() -> None:
    assert holds_once(0) == set()
    assert holds_once(2) == {Hold.POOL_FULL}
    assert holds_once(1, owner_cores=4.0) == {Hold.OWNER_BUSY}
    assert holds_once(1, mode=Mode.DRAINING) == {Hold.MODE}
    assert holds_once(1, mode=Mode.FORCE_STOP) == {Hold.MODE}
    assert holds_once(1, available=100 * 2**20) == {Hold.MEMORY}
    assert holds_once(1, available=100 * 2**20, mem_floor="100M") == {Hold.MEMORY}  # at the floor: no start
    assert holds_once(1, presence=Presence(on_battery=True)) == {Hold.BATTERY}
    keyboard = Presence(input_idle_seconds=3.0, input_source="logind")
    assert holds_once(1, presence=keyboard, input_idle=60) == {Hold.INPUT}
    assert holds_once(1, presence=Presence(), input_idle=60) == {Hold.INPUT}  # nothing can tell
    sunday_noon = Presence(local_time=datetime(2024, 6, 2, 12, 0))
    assert holds_once(1, presence=sunday_noon, run_hours=["Mon-Fri"]) == {Hold.RUN_HOURS}
    assert holds_once(0, max_starts_per_minute=1, docks_per_loop=2) == {Hold.START_RATE}
    assert holds_once(0, history=StartHistory(backoff_until=1010.0)) == {Hold.START_BACKOFF}
    assert holds_once(0, memory=Memory(reclaim_ended=990.0), grace_spawn=60) == {Hold.GRACE_SPAWN}
    paused = Memory(paused_since=(("p0", 900.0),))
    assert holds_once(1, memory=paused) == {Hold.PAUSED_FIRST}


def test_holds_follow_the_order_hold_declares() -> None:
    config = make_config(max_docks=2, input_idle=60, run_hours=["Sat,Sun"])
    everything = Presence(input_idle_seconds=5, on_battery=True, local_time=MONDAY_NOON)
    plan, _ = decide(idle_host(owner_cores=4.0), [], config, Mode.ACTIVE, 0.0, Memory(), StartHistory(), everything)
    assert plan.holds == (Hold.OWNER_BUSY, Hold.INPUT, Hold.BATTERY, Hold.RUN_HOURS)
    assert "starting none: keyboard used 5 s ago; on battery; outside run_hours until Sat 00:00" in plan.reasons


# -- properties ---------------------------------------------------------------------------

STATES = st.sampled_from(["running", "paused", "created", "exited", "dead", "restarting"])
pilot_lists = st.lists(
    st.builds(
        PilotView,
        id=st.uuids().map(str),
        state=STATES,
        age=st.floats(0, 1e5),
        stopping=st.booleans(),
        spare=st.booleans(),
        fresh=st.booleans(),
    ),
    max_size=30,
    unique_by=lambda pilot: pilot.id,
)
samples = st.builds(
    HostSample,
    ncpus=st.integers(1, 64),
    busy_cores=st.floats(0, 64),
    pilots_cores=st.floats(0, 64),
    available_bytes=st.integers(0, 64 * GIB),
    cpu_pressure=st.none() | st.floats(0, 100),
    memory_pressure=st.none() | st.floats(0, 100),
)
configs = st.builds(
    make_config,
    max_docks=st.integers(0, 40),
    docks_per_loop=st.integers(1, 50),
    grace_spawn=st.floats(0, 600),
    pause_delay=st.floats(0, 60),
    grace_kill=st.floats(0, 600),
    mem_floor=st.integers(0, 4 * GIB),
)
memories = st.builds(
    Memory, owner_busy=st.booleans(), owner_since=st.floats(-1e4, 1e4), reclaim_ended=st.floats(-1e4, 1e4)
)


@settings(max_examples=300, deadline=None)
@given(samples, pilot_lists, configs, st.sampled_from(list(Mode)), st.floats(0, 1e5), memories)
def test_plan_invariants(
    sample: HostSample, pilots: list[PilotView], config: Config, mode: Mode, now: float, memory: Memory
) -> None:
    plan, after = decide(sample, pilots, config, mode, now, memory, StartHistory())
    waiting = [p for p in pilots if p.spare and p.state == "created"]
    live = [p for p in pilots if p.state in {"running", "paused", "restarting", "created"} and not p.stopping]
    live = [p for p in live if p.id not in plan.remove and p not in waiting]
    leaving = {pilot for pilot, _ in plan.stop + plan.kill}
    starts = plan.start + len(plan.start_spares)
    # never more than max_docks, a started spare counted
    assert len(live) - len(leaving) + starts <= max(config.pool_size, len(live) - len(leaving))
    assert starts <= config.docks_per_loop
    # never a spawn (or a spare made) outside active mode, with a busy owner, or under the memory floor
    if mode is not Mode.ACTIVE or after.owner_busy or sample.available_bytes <= config.mem_floor:
        assert starts == 0 and plan.prepare == 0
    # only fresh spares that wait, with nothing under way on them, are started; at most one is made
    assert set(plan.start_spares) <= {p.id for p in waiting if p.fresh and not p.stopping}
    assert plan.prepare <= 1 and not (plan.prepare and [p for p in waiting if p.id not in plan.remove])
    if mode is not Mode.ACTIVE:
        assert {p.id for p in waiting if not p.stopping} <= set(plan.remove)
    # every action names a known pilot, and no pilot gets two actions
    known = {p.id for p in pilots}
    acted = list(plan.pause) + list(plan.unpause) + [p for p, _ in plan.stop + plan.kill] + list(plan.start_spares)
    assert set(acted) <= known and set(plan.remove) <= known
    assert len(acted) == len(set(acted)) and not set(acted) & set(plan.remove)
    assert not set(acted) & {p.id for p in pilots if p.stopping}
    assert plan.reasons  # a user can always see why
    assert plan.start > 0 or plan.start_spares or plan.holds  # and metrics what held the pilots back
    # a timer to wake for lies ahead, never behind
    assert plan.wake_in is None or plan.wake_in > 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=2, max_size=60), st.floats(1, 20))
def test_no_flapping_around_a_threshold(loads: list[float], spacing: float) -> None:
    """Whatever the owner's load does, a pilot is paused at most once per pause_delay and
    resumed at most once per pause_delay: no pause/resume churn."""
    config = make_config(max_docks=1, pause_delay=10, grace_kill=1e6, owner_busy_percent=40, owner_idle_percent=20)
    memory, state, now = Memory(), "running", 0.0
    changes: list[float] = []
    for load in loads:
        sample = idle_host(ncpus=1, owner_cores=load / 100)
        plan, memory = decide(sample, [PilotView("p", state, 100.0)], config, Mode.ACTIVE, now, memory, StartHistory())
        if plan.pause or plan.unpause:
            state = "paused" if plan.pause else "running"
            changes.append(now)
        now += spacing
    # a pause needs pause_delay of continuous busy state, so between two pauses lies at least pause_delay
    pauses = changes[0::2]
    assert all(later - earlier >= config.pause_delay for earlier, later in itertools.pairwise(pauses))


def test_a_pilot_that_refuses_to_freeze_is_held_and_stopped_after_grace_kill() -> None:
    """A starved pilot may fail to freeze; it is asked once, then counts as paused."""
    config = make_config(max_docks=1, pause_delay=0, grace_kill=30)
    busy = idle_host(ncpus=1, owner_cores=1.0)
    plan, memory = once(busy, running(1), config, now=0.0)
    assert plan.pause == ("p0",)
    plan, memory = once(busy, running(1), config, now=10.0, memory=memory)  # the freeze failed
    assert plan.pause == () and plan.stop == () and plan.start == 0
    plan, memory = once(busy, running(1), config, now=31.0, memory=memory)
    assert plan.stop == (("p0", "owner reclaim"),)


def test_grace_kill_counts_from_the_pause_asked_for_even_when_the_engine_takes_long_to_freeze() -> None:
    """A loop that runs while a pause is under way (the pilot "stopping") keeps its hold time:
    the pilot is stopped grace_kill after the pause was asked for, not after the engine was done."""
    config = make_config(max_docks=2, pause_delay=0, grace_kill=2)
    busy = idle_host(ncpus=2, owner_cores=2.0)
    plan, memory = once(busy, running(2), config, now=0.0)
    assert set(plan.pause) == {"p0", "p1"}
    # p1 froze at once; p0's freeze is still under way a second later
    freezing = [PilotView(id="p0", state="running", age=100.0, stopping=True), running(2, state="paused")[1]]
    plan, memory = once(busy, freezing, config, now=1.0, memory=memory)
    assert plan.stop == () and dict(memory.paused_since) == {"p0": 0.0, "p1": 0.0}
    plan, _ = once(busy, running(2, state="paused"), config, now=2.0, memory=memory)
    assert {pilot for pilot, _ in plan.stop} == {"p0", "p1"}


def test_a_pilot_whose_resume_is_under_way_is_not_held_again() -> None:
    config = make_config(max_docks=1, pause_delay=0, grace_kill=60, grace_spawn=0)
    _, memory = once(idle_host(ncpus=1, owner_cores=1.0), running(1), config, now=0.0)
    plan, memory = once(idle_host(ncpus=1), running(1, state="paused"), config, now=5.0, memory=memory)
    assert plan.unpause == ("p0",) and memory.paused_since == ()
    # the engine still lists it paused while the resume is under way
    resuming = [PilotView(id="p0", state="paused", age=100.0, stopping=True)]
    _, memory = once(idle_host(ncpus=1), resuming, config, now=6.0, memory=memory)
    assert memory.paused_since == ()


def test_a_held_pilot_that_never_froze_is_let_go_when_the_owner_leaves() -> None:
    config = make_config(max_docks=1, pause_delay=0, grace_kill=30, grace_spawn=0)
    _, memory = once(idle_host(ncpus=1, owner_cores=1.0), running(1), config, now=0.0)
    plan, memory = once(idle_host(ncpus=1), running(1), config, now=5.0, memory=memory)
    assert plan.unpause == () and plan.stop == () and plan.start == 0
    assert memory.paused_since == ()
    plan, _ = once(idle_host(ncpus=1), running(1), config, now=6.0, memory=memory)
    assert plan.pause == () and plan.stop == ()


def test_load_hovering_between_thresholds_changes_nothing() -> None:
    """Load oscillating between the idle and busy thresholds never pauses or resumes."""
    config = make_config(max_docks=2, pause_delay=0, owner_busy_percent=40, owner_idle_percent=20)
    memory = Memory()
    for step, percent in enumerate([25, 39, 21, 35, 30, 38] * 5):
        sample = idle_host(ncpus=2, owner_cores=2 * percent / 100)
        plan, memory = once(sample, running(2), config, now=float(step), memory=memory)
        assert plan.pause == () and plan.unpause == () and plan.stop == ()


def test_reasons_explain_the_owner() -> None:
    config = make_config(max_docks=1, pause_delay=30)
    plan, _ = once(idle_host(ncpus=1, owner_cores=1.0), running(1), config)
    assert any("owner at 100%" in reason for reason in plan.reasons)


def test_the_plan_says_when_the_next_timer_falls_due() -> None:
    """The daemon sleeps until then rather than a whole main_sleep, so timers run to time."""
    config = make_config(max_docks=2, pause_delay=5, grace_kill=60, grace_spawn=30, cpus_per_dock=1)
    busy = idle_host(ncpus=2, owner_cores=2.0)
    plan, memory = once(busy, running(2), config, now=0.0)
    assert plan.wake_in == 5.0  # pause_delay
    plan, memory = once(busy, running(2), config, now=5.0, memory=memory)
    assert plan.pause == ("p1", "p0") and plan.wake_in == 60.0  # grace_kill
    plan, memory = once(busy, running(2, state="paused"), config, now=40.0, memory=memory)
    assert plan.wake_in == 25.0
    plan, memory = once(busy, running(2, state="paused"), config, now=65.0, memory=memory)
    assert len(plan.stop) == 2 and plan.wake_in is None
    plan, memory = once(idle_host(ncpus=2), [], config, now=70.0, memory=memory)
    assert plan.start == 0 and plan.wake_in == 30.0  # grace_spawn
    plan, _ = once(idle_host(ncpus=2), [], config, now=100.0, memory=memory)
    assert plan.start == 2 and plan.wake_in is None


def test_a_back_off_is_a_timer_too() -> None:
    plan, _ = once(idle_host(), [], make_config(max_docks=4), now=100.0, history=StartHistory(backoff_until=107.5))
    assert plan.start == 0 and plan.wake_in == 7.5
    plan, _ = once(idle_host(), running(4), make_config(max_docks=4), now=100.0)
    assert plan.wake_in is None


# -- the owner's presence: keyboard, battery, run_hours ------------------------------------

# 2026-11-23 is a Monday
MONDAY_NOON = datetime(2026, 11, 23, 12, 0)


def present(
    config: Config, presence: Presence, pilots: list[PilotView], now: float, memory: Memory | None = None
) -> tuple[Plan, Memory]:
    """One decision on an idle CPU, with this presence."""
    return decide(idle_host(), pilots, config, Mode.ACTIVE, now, memory or Memory(), StartHistory(), presence)


def test_default_presence_changes_nothing() -> None:
    config = make_config(max_docks=4)
    assert once(idle_host(), running(2), config) == present(config, Presence(), running(2), 1000.0)


def test_keyboard_use_pauses_at_once_stops_after_grace_kill_and_pilots_return_after_grace_spawn() -> None:
    config = make_config(max_docks=2, input_idle=60, pause_delay=30, grace_kill=100, grace_spawn=50)
    typing = Presence(input_idle_seconds=12, input_source="logind")
    plan, memory = present(config, typing, running(2), now=0.0)
    # no pause_delay: a person at the keyboard gets the whole host at once
    assert plan.pause == ("p1", "p0") and plan.start == 0
    assert "keyboard used 12 s ago (logind): pausing 2 youngest pilots" in plan.reasons
    assert plan.wake_in == 48.0  # input_idle runs out then, unless typed again
    plan, memory = present(config, typing, running(2, state="paused"), now=99.0, memory=memory)
    assert plan.stop == () and plan.wake_in == 1.0
    plan, memory = present(config, typing, running(2, state="paused"), now=100.0, memory=memory)
    assert {pilot for pilot, _ in plan.stop} == {"p0", "p1"}
    assert any("keyboard used 12 s ago (logind) past grace_kill 100 s" in reason for reason in plan.reasons)
    # the person leaves: input idle for input_idle, then grace_spawn before pilots start
    away = Presence(input_idle_seconds=60, input_source="logind")
    plan, memory = present(config, away, [], now=200.0, memory=memory)
    assert plan.start == 0 and plan.wake_in == 50.0
    assert any("grace_spawn" in reason for reason in plan.reasons)
    plan, memory = present(config, away, [], now=250.0, memory=memory)
    assert plan.start == 2


def test_keyboard_use_within_grace_kill_resumes_the_pilots_when_the_person_leaves() -> None:
    config = make_config(max_docks=2, input_idle=60, grace_kill=100)
    plan, memory = present(config, Presence(input_idle_seconds=0), running(2), now=0.0)
    assert plan.pause == ("p1", "p0")
    plan, _ = present(config, Presence(input_idle_seconds=61), running(2, state="paused"), now=61.0, memory=memory)
    assert plan.unpause == ("p0", "p1") and plan.stop == ()


def test_input_is_ignored_without_input_idle_and_unknown_input_counts_as_present() -> None:
    plan, _ = present(make_config(max_docks=2), Presence(input_idle_seconds=0), running(2), now=0.0)
    assert plan.pause == ()
    plan, _ = present(make_config(max_docks=2, input_idle=60), Presence(), running(2), now=0.0)
    assert plan.pause == ("p1", "p0")
    assert any("no source tells when a keyboard was last used" in reason for reason in plan.reasons)


def test_on_battery_unless_run_on_battery() -> None:
    battery = Presence(on_battery=True)
    plan, _ = present(make_config(max_docks=2), battery, running(2), now=0.0)
    assert plan.pause == ("p1", "p0") and "on battery: pausing 2 youngest pilots" in plan.reasons
    plan, _ = present(make_config(max_docks=2), battery, [], now=0.0)
    assert plan.start == 0 and "starting none: on battery" in plan.reasons
    plan, _ = present(make_config(max_docks=2, run_on_battery=True), battery, running(2), now=0.0)
    assert plan.pause == ()


def test_outside_run_hours_and_back_inside() -> None:
    config = make_config(max_docks=2, run_hours=["Mon-Fri 18:00-08:00", "Sat,Sun"], grace_kill=86400)
    plan, memory = present(config, Presence(local_time=MONDAY_NOON), running(2), now=0.0)
    assert plan.pause == ("p1", "p0")
    assert "outside run_hours until 18:00: pausing 2 youngest pilots" in plan.reasons
    assert plan.wake_in == 6 * 3600.0  # the window opens then
    evening = Presence(local_time=MONDAY_NOON.replace(hour=18))
    plan, memory = present(config, evening, running(2, state="paused"), now=6 * 3600.0, memory=memory)
    assert plan.unpause == ("p0", "p1")
    # a Friday night: closed at Monday 00:00, after the weekend
    friday = Presence(local_time=datetime(2026, 11, 27, 23, 0))
    plan, _ = present(config, friday, [], now=0.0)
    assert plan.start == 2 and plan.wake_in == 49 * 3600.0  # Monday 00:00
    monday = Presence(local_time=datetime(2026, 11, 30, 7, 0))
    plan, _ = present(config, monday, [], now=0.0)
    assert "starting none: outside run_hours until 18:00" in plan.reasons


def test_every_reason_is_named_and_pilots_wait_until_all_are_gone() -> None:
    config = make_config(max_docks=2, input_idle=60, run_hours=["Sat,Sun"], grace_spawn=10)
    everything = Presence(input_idle_seconds=5, on_battery=True, local_time=MONDAY_NOON)
    plan, memory = present(config, everything, [], now=0.0)
    assert "starting none: keyboard used 5 s ago; on battery; outside run_hours until Sat 00:00" in plan.reasons
    only_hours = Presence(input_idle_seconds=600, local_time=MONDAY_NOON)
    plan, memory = present(config, only_hours, [], now=100.0, memory=memory)
    assert plan.start == 0 and "starting none: outside run_hours until Sat 00:00" in plan.reasons
    weekend = Presence(input_idle_seconds=600, local_time=datetime(2026, 11, 28, 9, 0))
    plan, memory = present(config, weekend, [], now=200.0, memory=memory)
    assert plan.start == 0 and plan.wake_in == 10.0
    plan, _ = present(config, weekend, [], now=210.0, memory=memory)
    assert plan.start == 2


def test_a_present_owner_and_a_busy_cpu_share_one_hold() -> None:
    """CPU busy and then a person: the pilots paused for the CPU stay held, counted from their pause."""
    config = make_config(max_docks=2, pause_delay=0, grace_kill=100, input_idle=60)
    busy = idle_host(ncpus=2, owner_cores=2.0)
    plan, memory = decide(busy, running(2), config, Mode.ACTIVE, 0.0, Memory(), StartHistory(), Presence(600))
    assert plan.pause == ("p1", "p0")
    plan, memory = present(config, Presence(input_idle_seconds=3), running(2, state="paused"), 50.0, memory)
    assert plan.pause == () and plan.unpause == () and plan.stop == ()
    plan, _ = present(config, Presence(input_idle_seconds=3), running(2, state="paused"), 100.0, memory)
    assert len(plan.stop) == 2


@settings(max_examples=200, deadline=None)
@given(pilot_lists, st.floats(0, 1e5), memories, st.floats(0, 59), st.booleans())
def test_a_present_owner_never_gets_new_pilots_or_running_ones(
    pilots: list[PilotView], now: float, memory: Memory, idle: float, on_battery: bool
) -> None:
    config = make_config(max_docks=8, input_idle=60)
    presence = Presence(input_idle_seconds=idle, on_battery=on_battery)
    plan, _ = decide(idle_host(), pilots, config, Mode.ACTIVE, now, memory, StartHistory(), presence)
    assert plan.start == 0 and not plan.unpause
    left_running = {
        p.id for p in pilots if p.state == "running" and not p.stopping and p.id not in dict(memory.paused_since)
    }
    acted_on = set(plan.pause) | {pilot for pilot, _ in plan.stop + plan.kill} | set(plan.remove)
    assert left_running <= acted_on


def test_a_snooze_pauses_at_once_and_pilots_resume_when_it_ends() -> None:
    config = make_config(max_docks=2, pause_delay=30, grace_kill=600, grace_spawn=50)
    snoozed = Presence(snooze_left=120.0)
    plan, memory = present(config, snoozed, running(2), now=0.0)
    assert plan.pause == ("p1", "p0") and plan.start == 0
    assert plan.holds == (Hold.SNOOZE,)
    assert "snoozed by the owner for another 2 min: pausing 2 youngest pilots" in plan.reasons
    assert plan.wake_in == 120.0  # the snooze's end wakes the loop
    plan, memory = present(config, Presence(snooze_left=0.5), running(2, state="paused"), now=119.5, memory=memory)
    assert plan.unpause == () and plan.wake_in == 0.5
    plan, memory = present(config, Presence(), running(2, state="paused"), now=120.0, memory=memory)
    assert set(plan.unpause) == {"p0", "p1"}
    assert plan.holds == (Hold.PAUSED_FIRST,)


def test_without_lend_cores_nothing_is_capped() -> None:
    config = make_config(max_docks=4, input_idle=60)
    plan, _ = present(config, Presence(input_idle_seconds=1), running(4), now=0.0)
    assert plan.cpu_cap is None and len(plan.pause) == 4


def test_a_present_owner_keeps_lend_cores_running_under_a_cap() -> None:
    config = make_config(max_docks=4, input_idle=60, lend_cores=1, grace_kill=100)
    typing = Presence(input_idle_seconds=1)
    plan, memory = present(config, typing, running(4), now=0.0)
    assert plan.cpu_cap == 1.0
    assert plan.pause == ("p3", "p2", "p1")  # the oldest keeps running
    assert any(reason.startswith("lending 1 cores") for reason in plan.reasons)
    pilots = [*running(1), *[PilotView(f"p{index}", "paused", 100.0 - index) for index in (1, 2, 3)]]
    plan, memory = present(config, typing, pilots, now=100.0, memory=memory)
    assert {pilot for pilot, _ in plan.stop} == {"p1", "p2", "p3"} and plan.cpu_cap == 1.0
    # the lent pilot ends while the owner is still there: a new one takes its place
    plan, memory = present(config, typing, [], now=200.0, memory=memory)
    assert plan.start == 1 and plan.cpu_cap == 1.0
    # the owner leaves: the cap is lifted and grace_spawn runs before the pool fills again
    plan, memory = present(config, Presence(input_idle_seconds=61), running(1), now=300.0, memory=memory)
    assert plan.cpu_cap is None and plan.start == 0


def test_lending_resumes_a_paused_pilot_before_starting_one() -> None:
    config = make_config(max_docks=4, input_idle=60, lend_cores=2, grace_kill=1000)
    typing = Presence(input_idle_seconds=1)
    plan, memory = present(config, typing, running(4), now=0.0)
    assert len(plan.pause) == 2
    # one of the two lent pilots finished: the oldest paused one comes back, none starts
    pilots = [PilotView("p0", "running", 100.0), PilotView("p2", "paused", 98.0), PilotView("p3", "paused", 97.0)]
    plan, memory = present(config, typing, pilots, now=10.0, memory=memory)
    assert plan.unpause == ("p2",) and plan.start == 0 and plan.cpu_cap == 2.0


def test_a_busy_owner_leaving_more_room_than_is_lent_caps_nothing() -> None:
    config = make_config(max_docks=4, lend_cores=1, pause_delay=5)
    sample = idle_host(ncpus=4, pilots_cores=2.0, owner_cores=2.0)
    _, memory = once(sample, running(4), config, now=0.0)
    plan, _ = once(sample, running(4), config, now=10.0, memory=memory)
    assert plan.cpu_cap is None and len(plan.pause) == 2
    crowded = idle_host(ncpus=4, pilots_cores=0.5, owner_cores=3.5)
    plan, _ = once(crowded, running(4), config, now=20.0, memory=memory)
    assert plan.cpu_cap == 1.0 and len(plan.pause) == 3


def test_memory_still_kills_while_lending() -> None:
    config = make_config(max_docks=4, input_idle=60, lend_cores=1, mem_floor="1G", max_dock_mem="1G")
    short = idle_host(available_bytes=GIB // 2)
    plan, _ = decide(
        short, running(2), config, Mode.ACTIVE, 0.0, Memory(), StartHistory(), Presence(input_idle_seconds=1)
    )
    assert plan.kill and plan.cpu_cap == 1.0


def test_a_snooze_takes_the_whole_host_back_even_with_lend_cores() -> None:
    config = make_config(max_docks=2, input_idle=60, lend_cores=1)
    plan, _ = present(config, Presence(input_idle_seconds=1, snooze_left=600.0), running(2), now=0.0)
    assert plan.cpu_cap is None and len(plan.pause) == 2


# -- a drain deadline ---------------------------------------------------------------------


def with_deadline(
    deadline_left: float | None, pilots: list[PilotView], mode: Mode = Mode.ACTIVE, **values: object
) -> Plan:
    config = make_config(max_docks=4, drain_min_runtime=600, **values)
    plan, _ = decide(idle_host(), pilots, config, mode, 1000.0, Memory(), StartHistory(), Presence(), deadline_left)
    return plan


@given(st.one_of(st.none(), st.floats(-1e6, 1e6)), st.floats(0, 1e5))
def test_the_drain_verdict_follows_the_seconds_left(deadline_left: float | None, min_runtime: float) -> None:
    verdict = drain_verdict(deadline_left, min_runtime)
    if deadline_left is None:
        assert verdict is DrainVerdict.NONE
    elif deadline_left <= 0:
        assert verdict is DrainVerdict.PASSED
    else:
        assert (verdict is DrainVerdict.OPEN) == (deadline_left >= min_runtime)


def test_pilots_start_while_they_would_run_at_least_drain_min_runtime() -> None:
    plan = with_deadline(601.0, [])
    assert plan.start == 4 and Hold.DEADLINE not in plan.holds
    # the loop wakes when the window for new pilots closes, and again at the deadline
    assert plan.wake_in == pytest.approx(1.0)


def test_no_pilot_starts_inside_drain_min_runtime_and_the_running_ones_go_on() -> None:
    plan = with_deadline(599.0, running(2), docks_per_loop=4)
    assert plan.start == 0 and plan.stop == () and plan.prepare == 0
    assert Hold.DEADLINE in plan.holds
    assert any("drain deadline is 10 min away, less than drain_min_runtime 10 min" in r for r in plan.reasons)
    assert plan.wake_in == pytest.approx(599.0)


def test_a_spare_is_removed_once_the_deadline_is_too_near_for_a_pilot() -> None:
    spare = PilotView(id="s", state="created", age=5.0, spare=True)
    plan = with_deadline(300.0, [*running(4), spare])
    assert plan.remove == ("s",) and plan.start_spares == ()
    assert with_deadline(3600.0, [*running(4), spare]).remove == ()


@pytest.mark.parametrize("mode", [Mode.ACTIVE, Mode.DRAINING])
def test_at_the_deadline_every_pilot_is_stopped_as_by_force_stop(mode: Mode) -> None:
    paused = PilotView(id="p9", state="paused", age=1.0)
    plan = with_deadline(-2.0, [*running(2), paused], mode)
    assert plan.stop == (("p9", "deadline"), ("p1", "deadline"), ("p0", "deadline"))
    assert plan.start == 0 and plan.holds == (Hold.DEADLINE,)
    assert any(reason.startswith("drain deadline passed 2 s ago: stopping 3 pilots") for reason in plan.reasons)


def test_drain_stop_exits_once_the_deadline_left_no_pilot() -> None:
    assert with_deadline(-1.0, [], Mode.DRAIN_STOP).exit_daemon
    assert not with_deadline(-1.0, running(1), Mode.DRAIN_STOP).exit_daemon
    assert not with_deadline(-1.0, [], Mode.ACTIVE).exit_daemon


def test_force_stop_names_itself_even_past_a_deadline() -> None:
    plan = with_deadline(-1.0, running(1), Mode.FORCE_STOP)
    assert plan.stop == (("p0", "force-stop"),) and plan.holds == (Hold.MODE,)


def test_without_a_deadline_nothing_changes() -> None:
    config = make_config(max_docks=4)
    assert with_deadline(None, running(1)) == once(idle_host(), running(1), config)[0]
