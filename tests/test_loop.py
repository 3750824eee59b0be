"""The daemon's loop driven one iteration at a time against a small in-memory engine that
implements Plancton's own Engine protocol (never a fake of the Docker HTTP API), with the
cgroup tree in a temporary folder and timers on a clock the test moves."""

import dataclasses
import os
import threading
from collections.abc import Iterator, Sequence

import pytest

from plancton.config.loader import parse
from plancton.config.schema import Config, HostFacts
from plancton.control.modefiles import cancel_drain_by, write_drain_by, write_mode
from plancton.control.paths import Paths, resolve
from plancton.control.state import read_state
from plancton.control.updates import TakenRevision, read_taken, write_taken
from plancton.core.modes import Mode
from plancton.core.policy import HostSample, Memory
from plancton.daemon.loop import TIMER_SLACK_SECONDS, Daemon
from plancton.daemon.roster import Roster
from plancton.engines.base import EngineInfo, EventCallback, Pilot
from plancton.engines.spec import LABEL_CREATED, LABEL_SPARE, LABEL_SPEC, ContainerSpec
from plancton.errors import EngineUnavailable, PilotGone
from plancton.metrics.reporting import NullReporter, PilotEvent
from tests.support import services

#: Pilots start at once, and no spare waits beside them unless a test asks for one.
QUIET = {"grace_spawn": 0, "spare_pilot": False}
WALL_START = 1_800_000_000.0


class MemoryEngine:
    """An engine that keeps its pilots in a dict: enough of the Engine protocol for the loop."""

    def __init__(self) -> None:
        self.api_calls = 0
        self.pilots: dict[str, Pilot] = {}
        #: containers of the original Plancton's on the same engine
        self.originals: dict[str, Pilot] = {}
        self.specs: dict[str, ContainerSpec] = {}
        self.available = True
        self.stops: list[str] = []
        #: starts still to carry out without an answer, as an engine whose reply times out
        self.unanswered_starts = 0
        #: whether the engine cannot be reached after a start it did not answer
        self.lost_after_unanswered = False
        #: the starts and settles asked for, in order, each with its container
        self.starts_and_settles: list[tuple[str, str]] = []
        #: the id of the image every reference names
        self.image = "sha256:1"
        self._created = 0
        self._lock = threading.Lock()
        self._events_closed = threading.Event()

    def _request(self) -> None:
        if not self.available:
            raise EngineUnavailable("the engine does not answer (test)")
        with self._lock:
            self.api_calls += 1

    def engine_info(self) -> EngineInfo:
        self._request()
        return EngineInfo(version="0-test", cgroup_driver="cgroupfs", cgroup_version=2, name="Memory Engine")

    def legacy_pilots(self) -> list[Pilot]:
        self._request()
        with self._lock:
            return list(self.originals.values())

    def list(self) -> list[Pilot]:
        self._request()
        with self._lock:
            return list(self.pilots.values())

    def create_and_start(self, spec: ContainerSpec) -> str:
        container = self.create(spec)
        self.start(container)
        return container

    def create(self, spec: ContainerSpec) -> str:
        self._request()
        with self._lock:
            self._created += 1
            container = f"c{self._created:063d}"
            spare, digest = spec.labels.get(LABEL_SPARE) == "true", spec.labels[LABEL_SPEC]
            self.pilots[container] = Pilot(
                container,
                spec.name,
                "created",
                float(spec.labels[LABEL_CREATED]),
                spec.image,
                None,
                spare,
                digest,
                self.image,
            )
            self.specs[container] = spec
        return container

    def start(self, container: str) -> None:
        self._set_state(container, "running")
        self.starts_and_settles.append(("start", container))
        if self.unanswered_starts:
            self.unanswered_starts -= 1
            self.available = not self.lost_after_unanswered
            raise EngineUnavailable("the engine does not answer (test): Read timed out")

    def _set_state(self, container: str, state: str, exit_code: int | None = None) -> None:
        self._request()
        with self._lock:
            found = next((where for where in (self.pilots, self.originals) if container in where), None)
            if found is None:
                raise PilotGone(f"{container[:12]}: not found")
            found[container] = dataclasses.replace(found[container], state=state, exit_code=exit_code)

    def pause(self, container: str) -> None:
        self._set_state(container, "paused")

    def unpause(self, container: str) -> None:
        self._set_state(container, "running")

    def stop(self, container: str, vacate_seconds: float, paused: bool = False) -> None:
        self.stops.append(container)
        self._set_state(container, "exited", 0)

    def kill(self, container: str, paused: bool = False) -> None:
        self._set_state(container, "exited", 137)

    def remove(self, container: str) -> None:
        self._request()
        with self._lock:
            self.pilots.pop(container, None)
            self.originals.pop(container, None)

    def settle(self, container: str) -> None:
        self._request()
        self.starts_and_settles.append(("settle", container))

    def image_present(self, reference: str) -> bool:
        return self.image_id(reference) is not None

    def image_id(self, reference: str) -> str | None:
        self._request()
        return self.image

    def pull(self, reference: str) -> None:
        self._request()

    def watch_events(self, on_event: EventCallback, since: int | None = None) -> None:
        self._events_closed.wait()

    def close_events(self) -> None:
        self._events_closed.set()

    def exit(self, container: str, code: int) -> None:
        """The pilot's command ended by itself."""
        self._set_state(container, "exited", code)

    def states(self) -> Sequence[str]:
        with self._lock:
            return sorted(pilot.state for pilot in self.pilots.values())


class IdleHost:
    """A host whose owner does nothing, whatever this machine is doing."""

    def sample(self) -> HostSample:
        return HostSample(ncpus=8, busy_cores=0.0, pilots_cores=0.0, available_bytes=2**34)


@dataclasses.dataclass
class Harness:
    daemon: Daemon
    engine: MemoryEngine
    paths: Paths
    clock: list[float]

    def turn(self, seconds: float = 1.0) -> None:
        """Move the clock on and run one iteration, then let its actions finish."""
        self.clock[0] += seconds
        self.daemon.iterate()
        executor = self.daemon.executor
        idle = lambda: executor.under_way() == (frozenset(), 0) and executor.preparing() == 0  # noqa: E731
        services.poll(idle, 10, "the actions to finish", 0.01)


def config_of(**values: object) -> Config:
    config, _ = parse({**QUIET, **values}, HostFacts(ncpus=8, ram_bytes=2**34, swap_bytes=0))
    return config


@pytest.fixture
def harness(tmp_path: "os.PathLike[str]") -> Iterator[Harness]:
    root = str(tmp_path)
    folders = [os.path.join(root, name) for name in ("conf", "run", "log")]
    paths = resolve(True, folders[0], folders[1], folders[2], statedir=os.path.join(root, "state"))
    for folder in (paths.confdir, paths.rundir, paths.logdir):
        os.makedirs(folder)
    clock = [1000.0]
    engine = MemoryEngine()
    cgroups = os.path.join(root, "cgroup")
    os.makedirs(cgroups)
    daemon = Daemon(
        paths,
        config_of(max_docks=3, docks_per_loop=3),
        engine,
        clock=lambda: clock[0],
        wall=lambda: WALL_START + clock[0],
        cgroup_root=cgroups,
        sensor=lambda cgroup: IdleHost(),
    )
    yield Harness(daemon, engine, paths, clock)
    daemon.shutdown()


def test_fills_the_pool_and_replaces_a_pilot_that_exits(harness: Harness) -> None:
    harness.turn()
    assert harness.engine.states() == ["running"] * 3
    first = next(iter(harness.engine.pilots))
    harness.engine.exit(first, 0)
    harness.turn()  # the exited pilot is removed
    harness.turn()  # and replaced
    assert first not in harness.engine.pilots
    assert harness.engine.states() == ["running"] * 3


class RecordingReporter(NullReporter):
    """A reporter that keeps the pilot events it is given."""

    def __init__(self) -> None:
        self.events: list[PilotEvent] = []

    def pilot_event(self, event: PilotEvent) -> None:
        self.events.append(event)


def test_a_start_the_engine_carried_out_without_answering_counts_as_started_once_listed(harness: Harness) -> None:
    reporter = RecordingReporter()
    harness.daemon.executor.reporter = reporter
    harness.daemon.config = config_of(max_docks=1)
    harness.engine.unanswered_starts = 1
    harness.turn()  # the start request times out; the engine starts the pilot all the same
    assert [event.kind for event in reporter.events] == ["start_failed"]
    harness.turn()
    (pilot,) = harness.engine.pilots.values()
    assert pilot.state == "running"
    assert [(event.kind, event.pilot) for event in reporter.events] == [("start_failed", ""), ("started", pilot.name)]
    harness.turn()  # counted once
    assert len(reporter.events) == 2 and harness.daemon.executor.starts.starts_total == 1


def test_pilots_get_the_configuration_and_the_cgroup_parent(harness: Harness) -> None:
    harness.daemon.config = config_of(max_docks=1, docker_cmd="sleep 5", cpus_per_dock=0.5)
    harness.turn()
    (spec,) = harness.engine.specs.values()
    assert spec.command == ["sleep", "5"]
    assert spec.host_config["cgroup_parent"] == f"/{harness.daemon.config.instance}"
    assert spec.host_config["cpu_quota"] == spec.host_config["cpu_period"] // 2


def test_force_stop_stops_every_pilot_and_starts_none(harness: Harness) -> None:
    harness.turn()
    write_mode(harness.paths.rundir, Mode.FORCE_STOP)
    harness.turn()
    assert sorted(harness.engine.stops) == sorted(harness.engine.pilots)
    harness.turn()
    harness.turn()
    assert harness.engine.states() == []


def test_drain_stop_ends_the_loop_and_removes_the_cgroup(harness: Harness) -> None:
    harness.turn()
    parent = os.path.join(harness.daemon.placement.cgroup_root, harness.daemon.config.instance)
    assert os.path.isdir(parent)  # created for the pilots, with the lowest weight
    write_mode(harness.paths.rundir, Mode.DRAIN_STOP)
    for pilot in list(harness.engine.pilots):
        harness.engine.exit(pilot, 0)
    harness.turn()
    harness.clock[0] += 1
    plan = harness.daemon.iterate()
    assert plan is not None and plan.exit_daemon
    for name in os.listdir(parent):  # on a cgroup file system control files do not keep a folder
        os.unlink(os.path.join(parent, name))
    harness.daemon.shutdown()
    assert not os.path.exists(parent)


def test_a_drain_deadline_reaches_the_pilots_and_stops_them_when_it_comes(harness: Harness) -> None:
    features = os.path.join(harness.paths.rundir, "machinefeatures")
    shutdowntime = os.path.join(features, "shutdowntime")
    harness.turn()
    spec = next(iter(harness.engine.specs.values()))
    assert f"{features}:/run/machinefeatures:ro" in spec.host_config["binds"]
    assert spec.environment["MACHINEFEATURES"] == "/run/machinefeatures"
    assert os.path.isdir(features) and not os.path.exists(shutdowntime)
    deadline = harness.daemon.wall() + 3600
    write_drain_by(harness.paths.rundir, deadline)
    harness.turn()
    with open(shutdowntime, encoding="ascii") as handle:
        assert handle.read() == f"{int(deadline)}\n"
    assert oct(os.stat(shutdowntime).st_mode & 0o777) == "0o644"
    state = read_state(harness.paths.state_file)
    assert state is not None and state.drain_by == deadline and state.drain_by_source == "planctonctl drain --by"
    # a farm-wide deadline that comes earlier wins, and names its file
    harness.daemon.config = config_of(max_docks=3, drain_by=deadline - 1800)
    harness.turn()
    state = read_state(harness.paths.state_file)
    assert state is not None and state.drain_by == deadline - 1800
    assert state.drain_by_source == harness.paths.config_file
    harness.clock[0] += 1800
    harness.turn()
    assert sorted(harness.engine.stops) == sorted(harness.engine.pilots) and harness.engine.stops
    harness.daemon.config = config_of(max_docks=3)
    cancel_drain_by(harness.paths.rundir)
    harness.turn()
    assert not os.path.exists(shutdowntime)


def test_a_revision_taken_while_the_pool_is_full_stays_on_trial_past_its_watch_until_a_pilot_of_it_runs(
    harness: Harness,
) -> None:
    harness.turn()
    assert harness.engine.states() == ["running"] * 3
    revision = harness.daemon.config.revision
    taken = TakenRevision("c0ffee" * 6 + "abcd", "bad" * 13 + "a", revision, WALL_START, watch=600.0)
    write_taken(harness.paths, taken)
    harness.turn()
    harness.turn(700.0)  # past the watch, with the previous pilots running all along and none started
    state = read_state(harness.paths.state_file)
    assert state is not None and "no pilot of it started yet (the pool is full)" in state.revision_trial
    assert read_taken(harness.paths) is not None
    first = next(iter(harness.engine.pilots))
    harness.engine.exit(first, 0)
    harness.turn()  # the exited pilot is removed
    harness.turn()  # and replaced by a pilot of the revision
    harness.turn(5.0)  # which runs past an instant exit
    state = read_state(harness.paths.state_file)
    assert state is not None and state.revision_trial == ""
    assert read_taken(harness.paths) is None


def test_a_revision_an_update_took_is_on_trial_until_one_of_its_pilots_runs(harness: Harness) -> None:
    revision = harness.daemon.config.revision
    taken = TakenRevision("c0ffee" * 6 + "abcd", "bad" * 13 + "a", revision, WALL_START, watch=600.0)
    write_taken(harness.paths, taken)
    harness.turn()
    state = read_state(harness.paths.state_file)
    assert state is not None and state.revision_trial.startswith(f"revision {revision} (commit c0ffeec0ffee) on trial")
    assert read_taken(harness.paths) == taken
    harness.turn(5.0)  # its pilots have run past an instant exit
    state = read_state(harness.paths.state_file)
    assert state is not None and state.revision_trial == ""
    assert read_taken(harness.paths) is None


def test_the_cgroup_stays_while_pilots_are_left(harness: Harness) -> None:
    harness.turn()
    harness.daemon.shutdown()
    assert os.path.isdir(os.path.join(harness.daemon.placement.cgroup_root, harness.daemon.config.instance))


def test_an_engine_away_is_retried_and_written_in_the_state(harness: Harness) -> None:
    harness.turn()
    harness.engine.available = False
    harness.turn()
    state = read_state(harness.paths.state_file)
    assert state is not None and state.engine_error is not None and "does not answer" in state.engine_error
    assert harness.daemon._next_wait() <= 2.0  # back-off starts short
    harness.engine.available = True
    harness.turn()
    state = read_state(harness.paths.state_file)
    assert state is not None and state.engine_error is None
    assert state.engine == "Memory Engine 0-test"
    assert len(state.pilots) == 3


def test_the_state_file_says_what_status_shows(harness: Harness) -> None:
    harness.turn()
    harness.turn()  # the state of a loop shows the pilots as it listed them
    state = read_state(harness.paths.state_file)
    assert state is not None
    assert state.pid == os.getpid() and state.loops == 2 and state.mode == "active"
    assert state.cgroup == {"parent": f"/{harness.daemon.config.instance}", "cpu": "cpu.weight 1"}
    assert {pilot.state for pilot in state.pilots} == {"running"}


def test_the_originals_pilots_are_listed_and_left_alone_unless_removal_is_asked(harness: Harness) -> None:
    original = Pilot(id="0ld", name="plancton-worker-ab12cd", state="running", created=WALL_START, image="old")
    harness.engine.originals[original.id] = original
    harness.turn()
    harness.turn()
    state = read_state(harness.paths.state_file)
    assert state is not None and state.legacy_pilots == ("plancton-worker-ab12cd",)
    assert original.id not in harness.engine.stops and harness.engine.originals  # never touched
    assert len(harness.engine.pilots) == 3  # nor counted in the pool

    harness.daemon.config = config_of(max_docks=3, docks_per_loop=3, legacy_pilots="remove")
    harness.daemon.legacy_pilots.look_again()  # as a reload does
    harness.turn()
    assert original.id in harness.engine.stops and not harness.engine.originals
    harness.turn()
    state = read_state(harness.paths.state_file)
    assert state is not None and state.legacy_pilots == ()


def test_a_timer_wakes_the_loop_at_its_due_time_however_long_the_loop_took(harness: Harness) -> None:
    harness.daemon.config = config_of(max_docks=3, grace_spawn=5, main_sleep=30)
    # the owner was seen idle again at the coming loop: grace_spawn runs until 1006
    harness.daemon.memory = Memory(reclaim_ended=harness.clock[0] + 1)
    harness.turn(1.0)
    assert harness.engine.states() == [] and harness.daemon.last_plan.wake_in == pytest.approx(5.0)
    harness.clock[0] += 0.7  # the rest of the loop: actions handed out, report, state file
    assert harness.daemon._next_wait() == pytest.approx(4.3 + TIMER_SLACK_SECONDS)
    harness.turn(4.3 + TIMER_SLACK_SECONDS)
    assert harness.engine.states() == ["running"] * 3


def test_pilot_ages_ignore_wall_clock_jumps() -> None:
    """TTL and grace timers run on the monotonic clock: a pilot's age is dated once from the
    engine's wall-clock creation time and never again."""
    roster = Roster()
    monotonic, wall = 1000.0, 1_800_000_000.0
    pilot = Pilot(id="a", name="clock-a", state="running", created=wall - 10, image="busybox:latest")
    roster.update([pilot], monotonic, wall)
    assert roster.views(monotonic, frozenset(), 0)[0].age == pytest.approx(10)
    for jump, age in ((86_400.0, 15), (-2 * 86_400.0, 20)):
        wall += jump
        monotonic += 5
        roster.update([pilot], monotonic, wall)
        assert roster.views(monotonic, frozenset(), 0)[0].age == pytest.approx(age)


def test_a_death_reported_by_events_wins_over_a_lagging_listing() -> None:
    roster = Roster()
    pilot = Pilot(id="a", name="p-a", state="running", created=0.0, image="busybox:latest")
    roster.died("a", 3)
    (seen,) = roster.update([pilot], 10.0, 10.0)
    assert (seen.state, seen.exit_code) == ("exited", 3)
    (seen,) = roster.update([pilot], 11.0, 11.0)  # reported once
    assert seen.state == "running"


# -- the spare pilot ----------------------------------------------------------------------


def spares(engine: MemoryEngine) -> list[str]:
    """Return the spares that wait: created, never started."""
    with engine._lock:
        return [pilot.id for pilot in engine.pilots.values() if pilot.spare and pilot.state == "created"]


@pytest.fixture
def spared(harness: Harness) -> Harness:
    """A pool of 3 with its spare, one loop in."""
    harness.daemon.config = config_of(max_docks=3, docks_per_loop=3, spare_pilot=True)
    harness.turn()
    assert harness.engine.states() == ["created", "running", "running", "running"]
    assert len(spares(harness.engine)) == 1
    return harness


def test_a_pilots_end_starts_the_spare_and_the_next_loop_makes_another(spared: Harness) -> None:
    engine = spared.engine
    (waiting,) = spares(engine)
    created = len(engine.specs)
    ended = next(pilot for pilot in engine.pilots if pilot != waiting)
    engine.exit(ended, 0)
    spared.turn()
    assert ended not in engine.pilots and engine.pilots[waiting].state == "running"
    assert len(engine.specs) == created  # one start, no new container
    spared.turn()
    assert engine.states() == ["created", "running", "running", "running"] and spares(engine) != [waiting]
    assert spared.daemon.roster.started_at(waiting) == WALL_START + spared.clock[0] - 1  # counts from its start


def test_a_spare_starts_once_the_engine_is_done_with_the_pilot_that_ended(spared: Harness) -> None:
    engine = spared.engine
    (waiting,) = spares(engine)
    ended = next(pilot for pilot in engine.pilots if pilot != waiting)
    engine.exit(ended, 0)
    engine.starts_and_settles.clear()
    spared.turn()
    assert engine.starts_and_settles == [("settle", ended), ("start", waiting)]


def test_a_spare_of_an_older_configuration_or_image_is_never_started(spared: Harness) -> None:
    engine = spared.engine
    (old,) = spares(engine)
    spared.daemon.config = config_of(max_docks=3, docks_per_loop=3, spare_pilot=True, docker_cmd="sleep 7")
    spared.turn()  # the pool is full: the stale spare goes, a fresh one comes
    (fresh,) = spares(engine)
    assert old not in engine.pilots and engine.specs[fresh].command == ["sleep", "7"]
    engine.image = "sha256:2"  # the image was pulled or loaded again under the same name
    ended = next(pilot for pilot in engine.pilots if pilot != fresh)
    engine.exit(ended, 0)
    spared.turn()
    assert fresh not in engine.pilots  # removed at its start, a new pilot started instead
    assert engine.states() == ["running"] * 3


def test_a_spare_whose_start_went_unanswered_counts_as_started_once_listed(spared: Harness) -> None:
    engine, executor = spared.engine, spared.daemon.executor
    (waiting,) = spares(engine)
    ended = next(pilot for pilot in engine.pilots if pilot != waiting)
    engine.exit(ended, 0)
    engine.unanswered_starts = 1
    engine.lost_after_unanswered = True
    starts = executor.starts.starts_total
    spared.turn()  # the spare's start times out, and the engine cannot be reached to remove it
    assert engine.pilots[waiting].state == "running" and executor.starts.starts_total == starts
    engine.available = True
    spared.turn()
    spared.turn()
    assert executor.starts.starts_total == starts + 1 and engine.pilots[waiting].state == "running"


def test_draining_and_stopping_the_daemon_remove_the_spare(spared: Harness) -> None:
    write_mode(spared.paths.rundir, Mode.DRAINING)
    spared.turn()
    assert spares(spared.engine) == [] and spared.engine.states() == ["running"] * 3
    write_mode(spared.paths.rundir, Mode.ACTIVE)
    spared.turn()
    assert len(spares(spared.engine)) == 1
    spared.daemon.shutdown()
    assert spares(spared.engine) == [] and spared.engine.states() == ["running"] * 3
