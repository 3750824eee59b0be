"""What the daemon needs of a container engine: the :class:`Engine` protocol and its facts.

The daemon, the image keeper and the tests' small fakes depend on this alone; the
adapter over the Docker API (:mod:`plancton.engines.docker_api`) implements it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from plancton.engines.spec import ContainerSpec


@dataclass(frozen=True)
class Pilot:
    """One pilot container as Docker lists it."""

    id: str
    name: str
    state: str
    created: float
    image: str
    exit_code: int | None = None
    #: created ahead of need and not started yet (a spare), with the digest of its container
    #: (:func:`plancton.engines.spec.spec_digest`) and the id of the image it was created from
    spare: bool = False
    digest: str = ""
    image_id: str = ""

    @property
    def shown_state(self) -> str:
        """The state that status and metrics show: "spare" for a spare that waits (it is no
        pilot of the pool), the engine's state otherwise."""
        return "spare" if self.spare and self.state == "created" else self.state


@dataclass(frozen=True)
class EngineInfo:
    """The facts of the container engine (Docker Engine or Podman) that Plancton adapts to."""

    version: str
    cgroup_driver: str
    cgroup_version: int
    #: what the engine calls itself ("Docker Engine", "Podman Engine")
    name: str = "Docker Engine"
    #: the process serving the engine's local socket, whose limits bound the pilots' own
    server_pid: int | None = None
    #: the uid of that process: 0 for a rootful engine; a rootless engine's user otherwise,
    #: whose own service manager then makes the engine's systemd slices
    server_uid: int | None = None
    #: whether the engine gives containers limits of its own choosing (Podman: nofile and
    #: nproc of about a million) rather than those of its own process, as Docker does; only
    #: then may a pilot ask for more than the host allows
    sets_own_ulimits: bool = False


#: What an event callback receives: the action ("die", "start", ...), the container id, and
#: the exit code (with "die" events only).
EventCallback = Callable[[str, str, int | None], None]


class Engine(Protocol):
    """The pilots of one Plancton instance on one container engine.

    Every method may raise :class:`~plancton.errors.EngineUnavailable` (the engine cannot be
    reached) or :class:`~plancton.errors.PilotError` (it refused the request: among its kinds
    :class:`~plancton.errors.PilotGone`, :class:`~plancton.errors.ImageMissing` and
    :class:`~plancton.errors.LimitRefused`); nothing else.
    """

    #: How many requests the engine has been sent so far (for the loop's report).
    api_calls: int

    def engine_info(self) -> EngineInfo:
        """Return the engine's version and cgroup setup."""

    def legacy_pilots(self) -> list[Pilot]:
        """Return the legacy pilots (Plancton 0.6's) on this engine: named plancton-worker-*,
        without Plancton's labels."""

    def list(self) -> list[Pilot]:
        """Return every pilot of this instance, in any state."""

    def create_and_start(self, spec: ContainerSpec) -> str:
        """Create and start a pilot; return its id."""

    def create(self, spec: ContainerSpec) -> str:
        """Create a pilot without starting it; return its id."""

    def start(self, container: str) -> None:
        """Start a pilot created earlier."""

    def pause(self, container: str) -> None:
        """Freeze every process of a pilot."""

    def unpause(self, container: str) -> None:
        """Thaw a paused pilot."""

    def stop(self, container: str, vacate_seconds: float, paused: bool = False) -> None:
        """Stop a pilot: SIGTERM, then SIGKILL after ``vacate_seconds``."""

    def kill(self, container: str, paused: bool = False) -> None:
        """Kill a pilot at once."""

    def remove(self, container: str) -> None:
        """Remove a pilot, stopping it first if needed."""

    def settle(self, container: str) -> None:
        """Return once the engine is done with the end of a pilot (or at once if the pilot is
        gone): a start meanwhile waits behind that work."""

    def image_present(self, reference: str) -> bool:
        """Return whether the image is in the engine's local store."""

    def image_id(self, reference: str) -> str | None:
        """Return the id of the image a reference names in the local store, or None."""

    def pull(self, reference: str) -> None:
        """Pull an image from its registry."""

    def watch_events(self, on_event: EventCallback, since: int | None = None) -> None:
        """Call ``on_event`` for each event of this instance's pilots until the stream ends."""

    def close_events(self) -> None:
        """End a running :meth:`watch_events` (from another thread)."""
