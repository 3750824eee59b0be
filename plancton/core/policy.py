"""The policy: given what was sensed, return what to do and why.

:func:`decide` takes a host sample, the pilots, the configuration, the mode, the time and the
policy's own memory of earlier loops, and returns a :class:`Plan` with a new memory. It does
no input or output and reads no clock; the daemon carries the plan out.

Graded response to the host's owner:
1. pilots always run at the lowest CPU weight (the kernel's job, not this module's);
2. owner busy for ``pause_delay``: pause the youngest pilots until the rest fit in the CPU
   the owner leaves;
3. paused for ``grace_kill`` with the owner still busy: stop them (SIGTERM, then SIGKILL);
4. start pilots again only after ``grace_spawn`` of owner idleness.
A person at the host (input within ``input_idle``), a host on battery (unless
``run_on_battery``), a time outside ``run_hours`` or the owner's snooze counts as a busy owner
too, without waiting for ``pause_delay``: every pilot is paused at once, and stopped after
``grace_kill``. With ``lend_cores`` the pilots keep that many cores instead, under a CPU cap
on their parent cgroup, while the owner is present or busy. Memory below ``mem_floor`` (or
under pressure) kills the youngest pilots at once.

With ``spare_pilot``, one pilot is kept created but not started once the pool is full, so
that a pilot's end costs one start rather than a create and a start. The spare is no pilot
of the pool (``max_docks`` counts it only once it is started); it is started only while it
is what a new pilot would be (``fresh``), removed when it is not, and removed in every mode
but active.

A drain deadline (``planctonctl drain --by``, or ``drain_by`` in the configuration) lets
pilots start only while they would run at least ``drain_min_runtime`` before it, and stops
the pilots left when it comes, as force-stop does (see :func:`drain_verdict`).
"""

import enum
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from plancton.core import hours
from plancton.core.holds import Hold, Reason, in_order
from plancton.core.modes import Mode

#: A container created but not started for this long is given up and removed.
CREATED_GRACE_SECONDS = 30.0
LIVE_STATES = frozenset({"running", "paused", "restarting", "created"})
FINISHED_STATES = frozenset({"exited", "dead"})


class Settings(Protocol):
    """The settings the policy reads, and nothing else (:class:`plancton.config.schema.Config`
    is one): durations in seconds, sizes in bytes, loads in percent of the host's CPU."""

    @property
    def pool_size(self) -> int: ...  # max_docks, resolved
    @property
    def docks_per_loop(self) -> int: ...
    @property
    def max_starts_per_minute(self) -> int: ...
    @property
    def cpus_per_dock(self) -> float: ...
    @property
    def max_dock_mem(self) -> int: ...
    @property
    def max_ttl(self) -> float: ...
    @property
    def owner_busy_percent(self) -> float: ...
    @property
    def owner_idle_percent(self) -> float: ...
    @property
    def cpu_pressure_percent(self) -> float: ...
    @property
    def pause_delay(self) -> float: ...
    @property
    def grace_kill(self) -> float: ...
    @property
    def grace_spawn(self) -> float: ...
    @property
    def mem_floor(self) -> int: ...
    @property
    def memory_pressure_percent(self) -> float: ...
    @property
    def input_idle(self) -> float: ...
    @property
    def run_on_battery(self) -> bool: ...
    @property
    def run_hours(self) -> tuple[hours.Window, ...]: ...
    @property
    def lend_cores(self) -> float: ...
    @property
    def spare_pilot(self) -> bool: ...
    @property
    def docker_image(self) -> str: ...
    @property
    def replace_on_image_change(self) -> bool: ...
    @property
    def drain_min_runtime(self) -> float: ...


class DrainVerdict(enum.Enum):
    """What a drain deadline allows now."""

    NONE = "none"  # no deadline
    OPEN = "open"  # pilots may start: they would run at least drain_min_runtime
    CLOSED = "closed"  # too near for a new pilot: start none, let the running ones go on
    PASSED = "passed"  # the deadline came: stop every pilot, start none


def drain_verdict(deadline_left: float | None, min_runtime: float) -> DrainVerdict:
    """Given the seconds left until a drain deadline (None: no deadline) and the least a pilot
    must be able to run, return what the deadline allows now."""
    if deadline_left is None:
        return DrainVerdict.NONE
    if deadline_left <= 0:
        return DrainVerdict.PASSED
    return DrainVerdict.CLOSED if deadline_left < min_runtime else DrainVerdict.OPEN


@dataclass(frozen=True)
class HostSample:
    """The host as measured over the last interval; CPU figures are in cores."""

    ncpus: int
    busy_cores: float
    pilots_cores: float
    available_bytes: int
    cpu_pressure: float | None = None
    memory_pressure: float | None = None
    own_cores: float = 0.0

    @property
    def owner_cores(self) -> float:
        """CPU used by everything but the pilots and Plancton itself: the owner's load."""
        return max(0.0, self.busy_cores - self.pilots_cores - self.own_cores)

    @property
    def owner_percent(self) -> float:
        """The owner's load as a percent of the whole host's CPU."""
        return 100.0 * self.owner_cores / max(1, self.ncpus)


@dataclass(frozen=True)
class Presence:
    """What the host says of its owner besides CPU load; the default says nothing.

    Args:
        input_idle_seconds: seconds since a keyboard or mouse was last used, or None when no
            source can tell.
        input_source: where that figure comes from ("logind", "terminals", "input devices").
        on_battery: whether the host runs on battery.
        local_time: the host's local time, for ``run_hours`` (None: not checked).
        snooze_left: seconds left of a snooze the owner asked for (None or 0: none).
    """

    input_idle_seconds: float | None = None
    input_source: str = ""
    on_battery: bool = False
    local_time: datetime | None = None
    snooze_left: float | None = None


@dataclass(frozen=True)
class PilotView:
    """What the policy needs to know of one pilot container."""

    id: str
    state: str
    age: float
    image: str = ""
    #: an action on it is under way (a stop, a start, a removal...)
    stopping: bool = False
    #: a spare: created ahead of need, not started (or being created)
    spare: bool = False
    #: for a spare, whether it is what a pilot created now would be (configuration, image)
    fresh: bool = True


@dataclass(frozen=True)
class Memory:
    """What the policy remembers between loops."""

    owner_busy: bool = False
    owner_since: float = -math.inf
    reclaim_ended: float = -math.inf
    paused_since: tuple[tuple[str, float], ...] = ()
    #: Why the owner counts as present (input, battery, hours); empty when it does not.
    present: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class StartHistory:
    """Recent pilot starts and the back-off after failures, kept by the daemon."""

    recent_starts: tuple[float, ...] = ()
    backoff_until: float = -math.inf
    spawn_now: bool = False


@dataclass(frozen=True)
class Plan:
    """What to do in this loop, and why."""

    start: int = 0
    pause: tuple[str, ...] = ()
    unpause: tuple[str, ...] = ()
    stop: tuple[tuple[str, str], ...] = ()
    kill: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    #: spares to start, as part of ``start`` pilots (the rest are created and started)
    start_spares: tuple[str, ...] = ()
    #: spares to create, not started
    prepare: int = 0
    reasons: tuple[str, ...] = ()
    #: What held pilots back in this loop, in the order :class:`Hold` declares them; the
    #: reasons say the same for people, with figures.
    holds: tuple[Hold, ...] = ()
    exit_daemon: bool = False
    #: The cores the pilots as a whole may use (a CPU cap on their parent cgroup), while
    #: they lend part of the host to a present or busy owner; None: no cap.
    cpu_cap: float | None = None
    #: Seconds until one of the policy's timers (pause_delay, grace_kill, grace_spawn, a
    #: back-off) falls due, when one is running: the daemon decides again then rather than
    #: after a whole main_sleep.
    wake_in: float | None = None


@dataclass(frozen=True)
class _Situation:
    """The inputs of one decision, bundled for the helpers of :func:`decide`."""

    sample: HostSample
    config: Settings
    mode: Mode
    now: float
    memory: Memory
    history: StartHistory
    presence: Presence
    deadline_left: float | None = None

    @property
    def drain(self) -> DrainVerdict:
        return drain_verdict(self.deadline_left, self.config.drain_min_runtime)


@dataclass
class _Draft:
    """A plan under construction inside :func:`decide`."""

    start: int = 0
    pause: list[str] = field(default_factory=list)
    unpause: list[str] = field(default_factory=list)
    stop: list[tuple[str, str]] = field(default_factory=list)
    kill: list[tuple[str, str]] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    start_spares: list[str] = field(default_factory=list)
    prepare: int = 0
    reasons: list[str] = field(default_factory=list)
    holds: set[Hold] = field(default_factory=set)
    exit_daemon: bool = False
    released: list[str] = field(default_factory=list)  # held pilots that never froze, let go

    def note(self, reason: str, *holds: Hold) -> None:
        """Record a reason for people, and the holds it stands for."""
        self.reasons.append(reason)
        self.holds.update(holds)

    def leaving(self) -> set[str]:
        return {pilot for pilot, _ in self.stop + self.kill}

    def freeze(self) -> Plan:
        return Plan(
            start=self.start,
            pause=tuple(self.pause),
            unpause=tuple(self.unpause),
            stop=tuple(self.stop),
            kill=tuple(self.kill),
            remove=tuple(self.remove),
            start_spares=tuple(self.start_spares),
            prepare=self.prepare,
            reasons=tuple(self.reasons),
            holds=in_order(self.holds),
            exit_daemon=self.exit_daemon,
        )


def decide(
    sample: HostSample,
    pilots: list[PilotView],
    config: Settings,
    mode: Mode,
    now: float,
    memory: Memory,
    history: StartHistory = StartHistory(),
    presence: Presence = Presence(),
    deadline_left: float | None = None,
) -> tuple[Plan, Memory]:
    """Given the sensed state, return the plan of this loop and the memory for the next.

    Args:
        sample: the host's CPU and memory over the last interval.
        pilots: this instance's pilot containers, in any state.
        config: the configuration in force.
        mode: the daemon's mode.
        now: a monotonic time in seconds.
        memory: the memory returned by the previous call (``Memory()`` at first).
        history: recent starts and back-off, to bound the start rate.
        presence: input, battery and local time; the default leaves them out.
        deadline_left: seconds until the drain deadline (negative once it passed), or None
            for no deadline.
    """
    draft = _Draft()
    situation = _Situation(sample, config, mode, now, memory, history, presence, deadline_left)
    drain = situation.drain
    memory = _update_owner(memory, sample, config, now)
    memory = _update_presence(memory, presence, config, now)
    spares = [pilot for pilot in pilots if waiting_spare(pilot)]
    pool = [pilot for pilot in pilots if not waiting_spare(pilot)]
    spares_unwanted = _spares_unwanted(mode, config, drain)
    if spares_unwanted:
        _drop_spares(spares, draft, spares_unwanted)
        spares = []
    _remove_finished(pool, draft, _owner_holds(memory) if mode is Mode.ACTIVE else ())
    present = [pilot for pilot in pool if pilot.state in LIVE_STATES and pilot.id not in draft.remove]
    live = [pilot for pilot in present if not pilot.stopping]
    memory = _forget_gone_pauses(memory, present, now)

    if mode is Mode.FORCE_STOP:
        _stop_all(live, draft, "force-stop", "force-stop", Hold.MODE)
        return draft.freeze(), memory
    if drain is DrainVerdict.PASSED:
        _stop_all(
            live, draft, "deadline", f"drain deadline passed {_minutes(-(deadline_left or 0.0))} ago", Hold.DEADLINE
        )
        draft.exit_daemon = mode is Mode.DRAIN_STOP and not pilots
        return draft.freeze(), memory
    situation = replace(situation, memory=memory)
    cap = _lending_cap(situation)
    if _relieve_memory(sample, live, config, draft):
        return replace(draft.freeze(), cpu_cap=cap), memory
    _expire(live, config, draft)
    remaining = [pilot for pilot in live if pilot.id not in draft.leaving()]
    _follow_owner(situation, remaining, draft)
    remaining = [pilot for pilot in remaining if pilot.id not in draft.leaving()]
    may_start = _spawn(situation, remaining, draft)
    _tend_spares(situation, remaining, spares, draft, may_start)
    if mode is Mode.DRAIN_STOP and not pilots:
        draft.exit_daemon = True
        draft.note("drain-stop: no pilot left, the daemon exits")
    memory = _record_pauses(memory, draft, now)
    return replace(draft.freeze(), cpu_cap=cap, wake_in=_wake_in(situation, memory)), memory


def _stop_all(live: list[PilotView], draft: _Draft, reason: str, why: str, hold: Hold) -> None:
    """Stop every live pilot, youngest first, for ``reason``, and say ``why``."""
    draft.stop += [(pilot.id, reason) for pilot in _youngest_first(live)]
    draft.note(f"{why}: stopping {len(live)} pilots, starting none", hold)


def _spares_unwanted(mode: Mode, config: Settings, drain: DrainVerdict) -> str:
    """Return why no spare may wait now ("" when one may): a mode but active, spare_pilot
    off, or a drain deadline too near for a new pilot."""
    if mode is not Mode.ACTIVE:
        return str(mode.value)
    if not config.spare_pilot:
        return "spare_pilot off"
    if drain in (DrainVerdict.CLOSED, DrainVerdict.PASSED):
        return "drain deadline near"
    return ""


def owner_busy_after(was_busy: bool, sample: HostSample, config: Settings) -> bool:
    """Given whether the owner counted as busy and a new sample, return whether it counts as
    busy now. Hysteresis: busy at owner_busy_percent (or CPU pressure), idle again only below
    owner_idle_percent."""
    percent = sample.owner_percent
    if was_busy:
        return percent >= config.owner_idle_percent
    pressured = (
        sample.cpu_pressure is not None
        and sample.cpu_pressure >= config.cpu_pressure_percent
        and percent >= config.owner_idle_percent
    )
    return percent >= config.owner_busy_percent or pressured


def _update_owner(memory: Memory, sample: HostSample, config: Settings, now: float) -> Memory:
    busy = owner_busy_after(memory.owner_busy, sample, config)
    if busy and not memory.owner_busy:
        return replace(memory, owner_busy=True, owner_since=now)
    if memory.owner_busy and not busy:
        # only a busy spell long enough to act on starts grace_spawn: a spike does not
        acted = now - memory.owner_since >= config.pause_delay
        return replace(memory, owner_busy=False, owner_since=now, reclaim_ended=now if acted else memory.reclaim_ended)
    return memory


def _update_presence(memory: Memory, presence: Presence, config: Settings, now: float) -> Memory:
    """Record why the owner counts as present; when the last reason goes, grace_spawn starts."""
    present = _present_reasons(presence, config)
    if memory.present and not present:
        return replace(memory, present=(), reclaim_ended=now)
    return replace(memory, present=present)


def _present_reasons(presence: Presence, config: Settings) -> tuple[Reason, ...]:
    """Return why a snooze, input, battery or the hours make the owner present (none: not
    present)."""
    reasons = []
    if presence.snooze_left:
        reasons.append(Reason(Hold.SNOOZE, f"snoozed by the owner for another {_minutes(presence.snooze_left)}"))
    idle, source = presence.input_idle_seconds, presence.input_source
    if config.input_idle and idle is None:
        reasons.append(Reason(Hold.INPUT, "no source tells when a keyboard was last used (input_idle is set)"))
    elif config.input_idle and idle is not None and idle < config.input_idle:
        reasons.append(Reason(Hold.INPUT, f"keyboard used {idle:.0f} s ago" + (f" ({source})" if source else "")))
    if presence.on_battery and not config.run_on_battery:
        reasons.append(Reason(Hold.BATTERY, "on battery"))
    moment = presence.local_time
    if moment is not None and not hours.allowed(config.run_hours, moment):
        change = hours.next_change(config.run_hours, moment)
        until = f" until {hours.describe_moment(change, moment)}" if change else ""
        reasons.append(Reason(Hold.RUN_HOURS, f"outside run_hours{until}"))
    return tuple(reasons)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.0f} min"


def present_text(present: tuple[Reason, ...]) -> str:
    """Given why the owner counts as present, return it as one sentence for people."""
    return "; ".join(reason.text for reason in present)


def _owner_holds(memory: Memory) -> tuple[Hold, ...]:
    """Return the holds of an owner who is busy or present (none when neither)."""
    busy = (Hold.OWNER_BUSY,) if memory.owner_busy else ()
    return busy + tuple(reason.hold for reason in memory.present)


def _remove_finished(pilots: list[PilotView], draft: _Draft, owner_holds: tuple[Hold, ...]) -> None:
    """Remove pilots that have ended (or never started): at once, or, while the owner is busy
    or present (``owner_holds``), once the owner is idle again, so that the engine's work of
    removing them (file systems, cgroups) is not done in the owner's time."""
    finished = []
    for pilot in pilots:
        never_started = pilot.state == "created" and pilot.age > CREATED_GRACE_SECONDS
        if pilot.state in FINISHED_STATES or (never_started and not pilot.stopping):
            finished.append(pilot.id)
    if finished and owner_holds:
        draft.note(f"owner busy: removing {len(finished)} finished pilots once it is idle", *owner_holds)
    elif finished:
        draft.remove += finished
        draft.note(f"removing {len(finished)} finished pilots")


def _youngest_first(pilots: list[PilotView]) -> list[PilotView]:
    return sorted(pilots, key=lambda pilot: (pilot.age, pilot.id))


def _relieve_memory(sample: HostSample, live: list[PilotView], config: Settings, draft: _Draft) -> bool:
    """Kill the youngest pilots at once when memory is short; return whether it was."""
    shortfall = config.mem_floor - sample.available_bytes
    pressured = sample.memory_pressure is not None and sample.memory_pressure >= config.memory_pressure_percent
    if shortfall <= 0 and not pressured:
        return False
    per_pilot = config.max_dock_mem or shortfall
    count = max(1, math.ceil(shortfall / per_pilot)) if shortfall > 0 else 1
    victims = _youngest_first(live)[:count]
    draft.kill += [(pilot.id, "memory") for pilot in victims]
    why = (
        f"available memory {sample.available_bytes // 2**20} MiB below mem_floor {config.mem_floor // 2**20} MiB"
        if shortfall > 0
        else f"memory pressure {sample.memory_pressure:.0f}%"
    )
    draft.note(f"{why}: killing {len(victims)} youngest pilots, starting none", Hold.MEMORY)
    return True


def _expire(live: list[PilotView], config: Settings, draft: _Draft) -> None:
    expired = [pilot for pilot in live if pilot.state == "running" and pilot.age > config.max_ttl]
    draft.stop += [(pilot.id, "ttl") for pilot in expired]
    if expired:
        draft.note(f"{len(expired)} pilots older than max_ttl {config.max_ttl:g} s: stopping them")
    if config.replace_on_image_change:
        outdated = [p for p in live if p.image and p.image != config.docker_image and p not in expired]
        draft.stop += [(pilot.id, "image changed") for pilot in outdated]
        if outdated:
            draft.note(f"{len(outdated)} pilots run an older image: stopping them")


def _follow_owner(situation: _Situation, live: list[PilotView], draft: _Draft) -> None:
    """Pause, resume or stop pilots as the owner's load asks.

    A pilot is *held* from the moment it is asked to pause until the owner is idle again,
    whether or not the engine managed to freeze it: a starved pilot under the lowest CPU
    weight may refuse to freeze, yet gets no CPU either. Held pilots are stopped after
    grace_kill and are never asked to pause twice.
    """
    sample, config, now, memory = situation.sample, situation.config, situation.now, situation.memory
    held_since = dict(memory.paused_since)
    held = [pilot for pilot in live if pilot.id in held_since]
    active = [pilot for pilot in live if pilot.state == "running" and pilot.id not in held_since]
    owner = f"owner at {sample.owner_percent:.0f}% of host CPU (pilots excluded)"
    in_state = now - memory.owner_since
    present = present_text(memory.present)
    holds = _owner_holds(memory) if memory.present else (Hold.OWNER_BUSY,)
    if _owner_engaged(situation):
        # a present owner gets the whole host back, a busy one what its load needs; but for
        # the cores lent while the owner works
        lending = _lending_cap(situation) is not None
        keep = _lent_pilots(config) if lending else _room_keep(situation)
        to_pause = _youngest_first(active)[: max(0, len(active) - keep)]
        draft.pause += [pilot.id for pilot in to_pause]
        why = present or f"{owner}, busy {in_state:.0f} s"
        if to_pause:
            draft.note(f"{why}: pausing {len(to_pause)} youngest pilots", *holds)
        overdue = [pilot for pilot in held if now - held_since[pilot.id] >= config.grace_kill]
        draft.stop += [(pilot.id, "owner reclaim") for pilot in overdue]
        if overdue:
            draft.note(
                f"{present or 'owner busy'} past grace_kill {config.grace_kill:g} s: stopping {len(overdue)} pilots",
                *holds,
            )
        if lending:
            _lend(situation, active, held, draft, keep)
    elif memory.owner_busy:
        draft.note(f"{owner}: pausing pilots if it stays busy {config.pause_delay:g} s", Hold.OWNER_BUSY)
    elif held:
        paused = [pilot for pilot in held if pilot.state == "paused"]
        room = max(0, _pool_room(config, live) + len(paused))
        to_resume = sorted(paused, key=lambda pilot: (-pilot.age, pilot.id))[:room]
        draft.unpause += [pilot.id for pilot in to_resume]
        draft.released += [pilot.id for pilot in held if pilot.state != "paused"]
        draft.note(f"{owner}, idle again: resuming {len(held)} held pilots")


def _owner_engaged(situation: _Situation) -> bool:
    """Return whether the owner is present, or busy for pause_delay: pilots give way then."""
    memory, config = situation.memory, situation.config
    busy_for = situation.now - memory.owner_since
    return bool(memory.present) or (memory.owner_busy and busy_for >= config.pause_delay)


def _room_keep(situation: _Situation) -> int:
    """Return how many pilots fit beside the owner: none for a present owner, those that fit in
    the CPU a busy owner leaves."""
    if situation.memory.present:
        return 0
    room = max(0.0, situation.sample.ncpus - situation.sample.owner_cores)
    return math.floor(room / situation.config.cpus_per_dock + 1e-9)


def _lent_pilots(config: Settings) -> int:
    """Return how many pilots run on the cores lent to a present or busy owner's host."""
    return math.ceil(config.lend_cores / config.cpus_per_dock - 1e-9) if config.lend_cores > 0 else 0


def _lending_cap(situation: _Situation) -> float | None:
    """Return the pilots' CPU cap while they lend part of the host to a present or busy
    owner (``lend_cores``), or None when they do not: no lending set, not in active mode, the
    owner neither present nor busy, a busy owner leaving more room than is lent, or a snooze
    (the owner asked for the whole host)."""
    config = situation.config
    snoozed = any(reason.hold is Hold.SNOOZE for reason in situation.memory.present)
    lending = situation.mode is Mode.ACTIVE and _owner_engaged(situation) and not snoozed
    if not lending or _lent_pilots(config) <= _room_keep(situation):
        return None
    return config.lend_cores


def _lend(situation: _Situation, active: list[PilotView], held: list[PilotView], draft: _Draft, keep: int) -> None:
    """While lending, keep ``keep`` pilots running: resume held pilots first (oldest first),
    then start new ones (see :func:`_spawn`)."""
    paused = [pilot for pilot in held if pilot.state == "paused" and pilot.id not in draft.leaving()]
    wanted = max(0, keep - len(active))
    to_resume = sorted(paused, key=lambda pilot: (-pilot.age, pilot.id))[:wanted]
    draft.unpause += [pilot.id for pilot in to_resume]
    cap = situation.config.lend_cores
    draft.note(f"lending {cap:g} cores to the owner's host: {min(keep, len(active) + len(to_resume))} pilots run")


def _pool_room(config: Settings, live: list[PilotView]) -> int:
    return config.pool_size - len(live)


def _spawn(situation: _Situation, live: list[PilotView], draft: _Draft) -> bool:
    """Decide how many pilots to start; return whether pilots may start now (unheld)."""
    config = situation.config
    hold = _spawn_hold(situation, live, draft)
    if hold:
        holds, why = hold
        draft.note(f"starting none: {why}", *holds)
        return False
    wanted = min(config.docks_per_loop, _pool_room(config, live))
    lending = _lending_cap(situation) is not None
    if lending:
        held = dict(situation.memory.paused_since)
        lent = [pilot for pilot in live if pilot.id not in held and pilot.state != "paused"]
        wanted = min(wanted, _lent_pilots(config) - len(lent))
    if wanted <= 0:
        if not lending:
            draft.note(f"pool full: {len(live)} of max_docks {config.pool_size} pilots", Hold.POOL_FULL)
        return not lending
    recent = sum(1 for started in situation.history.recent_starts if situation.now - started < 60.0)
    draft.start = max(0, min(wanted, config.max_starts_per_minute - recent))
    if draft.start < wanted:
        draft.note(f"start rate at max_starts_per_minute {config.max_starts_per_minute}", Hold.START_RATE)
    if draft.start:
        who = "lending to a present or busy owner" if lending else "owner idle"
        draft.note(f"{who}: starting {draft.start} pilots ({len(live)} of {config.pool_size} live)")
    return not lending


def waiting_spare(pilot: PilotView) -> bool:
    """Return whether a pilot is a spare that has not started: no pilot of the pool yet."""
    return pilot.spare and pilot.state == "created"


def _tend_spares(
    situation: _Situation, live: list[PilotView], spares: list[PilotView], draft: _Draft, may_start: bool
) -> None:
    """Start fresh spares for the pilots to start, remove stale ones, and create one when the
    pool is full and none is left, unless a spare starts now (the next loop makes one: not
    beside the start that a pilot's end waits for)."""
    config = situation.config
    if _spares_unwanted(situation.mode, config, situation.drain):
        return
    idle = [spare for spare in spares if not spare.stopping]
    stale = [spare for spare in idle if not spare.fresh]
    _drop_spares(stale, draft, "configuration or image changed since it was created")
    used = [spare.id for spare in idle if spare.fresh][: draft.start]
    draft.start_spares += used
    draft.start -= len(used)
    left = len(spares) - len(stale) - len(used)
    room = _pool_room(config, live) - len(used) - draft.start
    if may_start and not used and left == 0 and room <= 0 and config.pool_size > 0:
        draft.prepare = 1
        draft.note("creating a spare pilot, started when a pilot ends")


def _drop_spares(spares: list[PilotView], draft: _Draft, why: str) -> None:
    """Remove spares that wait, saying why."""
    idle = [spare.id for spare in spares if not spare.stopping]
    draft.remove += idle
    if idle:
        draft.note(f"{why}: removing {len(idle)} spare pilots")


def _spawn_hold(situation: _Situation, live: list[PilotView], draft: _Draft) -> tuple[tuple[Hold, ...], str] | None:
    """Return why no pilot may start now (the holds, and a sentence), or None when they may."""
    config, now, memory, history = situation.config, situation.now, situation.memory, situation.history
    held = dict(memory.paused_since)
    lending = _lending_cap(situation) is not None
    if situation.mode is not Mode.ACTIVE:
        return (Hold.MODE,), f"{situation.mode.value} ({len(live)} pilots left)"
    if situation.drain is DrainVerdict.CLOSED:
        left = _minutes(situation.deadline_left or 0.0)
        return (Hold.DEADLINE,), (
            f"the drain deadline is {left} away, less than drain_min_runtime "
            f"{_minutes(config.drain_min_runtime)} ({len(live)} pilots run until it)"
        )
    if memory.present and not lending:
        return _owner_holds(memory), present_text(memory.present)
    if memory.owner_busy and not lending:
        return (Hold.OWNER_BUSY,), "owner busy"
    if draft.unpause or draft.released or any(p.state == "paused" or p.id in held for p in live):
        return (Hold.PAUSED_FIRST,), "paused pilots resume first"
    idle_for = now - memory.reclaim_ended
    if idle_for < config.grace_spawn and not history.spawn_now and not lending:
        return (Hold.GRACE_SPAWN,), f"owner idle again only {idle_for:.0f} s of grace_spawn {config.grace_spawn:g} s"
    if now < history.backoff_until:
        return (Hold.START_BACKOFF,), f"backing off after failed starts for {history.backoff_until - now:.0f} s"
    if situation.sample.available_bytes <= config.mem_floor:
        return (Hold.MEMORY,), "available memory at mem_floor"
    return None


def _forget_gone_pauses(memory: Memory, present: list[PilotView], now: float) -> Memory:
    """Keep the hold times of the pilots still present, those with an action under way
    included (a pause the engine is still carrying out holds since it was asked for); one
    paused by an earlier daemon counts from now (not one whose resume is under way)."""
    known = dict(memory.paused_since)
    kept = tuple(
        (p.id, known.get(p.id, now)) for p in present if p.id in known or (p.state == "paused" and not p.stopping)
    )
    return replace(memory, paused_since=kept)


def _record_pauses(memory: Memory, draft: _Draft, now: float) -> Memory:
    resumed = set(draft.unpause) | set(draft.released)
    kept = tuple(item for item in memory.paused_since if item[0] not in resumed)
    return replace(memory, paused_since=kept + tuple((pilot, now) for pilot in draft.pause))


def _wake_in(situation: _Situation, memory: Memory) -> float | None:
    """Return the seconds until the next of the running timers falls due, or None for none.

    Besides the policy's own timers, the owner's presence may end by itself: a snooze ending,
    input_idle running out since the last keystroke, or run_hours opening or closing.
    """
    config, history, now, presence = situation.config, situation.history, situation.now, situation.presence
    due = []
    if memory.owner_busy:
        due.append(memory.owner_since + config.pause_delay)
    if memory.owner_busy or memory.present:
        due += [since + config.grace_kill for _, since in memory.paused_since]
    else:
        due += [memory.reclaim_ended + config.grace_spawn, history.backoff_until]
    if presence.snooze_left:
        due.append(now + presence.snooze_left)
    idle = presence.input_idle_seconds
    if config.input_idle and idle is not None and idle < config.input_idle:
        due.append(now + config.input_idle - idle)
    moment = presence.local_time
    change = hours.next_change(config.run_hours, moment) if moment is not None else None
    if moment is not None and change is not None:
        due.append(now + (change - moment).total_seconds())
    if situation.deadline_left is not None:
        # the moment starts close, and the moment the pilots are stopped
        due += [now + situation.deadline_left - config.drain_min_runtime, now + situation.deadline_left]
    ahead = [moment - now for moment in due if moment > now]
    return min(ahead) if ahead else None
