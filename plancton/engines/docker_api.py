"""The adapter over the Docker API, for the Docker Engine and Podman's API service.

It lists, creates, starts, pauses, stops and removes an instance's pilots. Every call goes
through :meth:`DockerPilots._call`, which counts it and translates the Docker SDK's and
requests' errors into Plancton's own (:class:`EngineUnavailable`,
:class:`EnginePermissionDenied`, :class:`PilotError` and its kinds :class:`PilotGone`,
:class:`ImageMissing`, :class:`LimitRefused`) from docker-py's types and the request made.
Pilots are found by their instance label only: a container without it is never touched,
whatever its name.

Where Podman answers differently, this module alone adapts, so the daemon never asks which
engine it talks to:

- events: Podman 4 filters on its own event names (``died``, ``remove``), so a filter of
  Docker's ``die`` and ``destroy`` alone never matches; both names are asked for and
  Podman's are read as Docker's (:data:`EVENT_ALIASES`);
- label filters: an engine that ignores one must not hand another instance's containers to
  the daemon, so listings and events are filtered by the label here too;
- image names: Podman lists a local image as ``localhost/busybox:latest``; the image a pilot
  was created from is kept in a label of its own (``org.plancton.image``);
- the engine's name and version come from ``/version``'s components ("Podman Engine");
- the cgroup parent follows the engine's cgroup manager (:mod:`plancton.platform.cgroups`
  makes a ``.slice`` only for the systemd manager, which requires one and which cgroupfs
  refuses), as ``/info`` reports it for both engines;
- a rootless engine (rootless Podman on a user's socket) has its slices made by that user's
  service manager, not the system's: the uid of the process serving the socket tells which
  (:attr:`~plancton.engines.base.EngineInfo.server_uid`);
- a pilot's end: the Docker Engine reports a ``die`` before it releases the pilot's network
  and mounts, and a start sent meanwhile waits behind that work, so :meth:`DockerPilots.settle`
  waits for it there; Podman cleans up in a process of its own, which a start does not wait
  for, so there it returns at once.
"""

import logging
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from plancton.control.legacy import LEGACY_PILOT_PREFIX, is_legacy_pilot
from plancton.engines.base import EngineInfo, Pilot
from plancton.engines.rlimit_refusal import limit_in_error
from plancton.engines.spec import (
    LABEL_CREATED,
    LABEL_IMAGE,
    LABEL_INSTANCE,
    LABEL_SPARE,
    LABEL_SPEC,
    ContainerSpec,
    instance_label,
)
from plancton.errors import EnginePermissionDenied, EngineUnavailable, ImageMissing, LimitRefused, PilotError, PilotGone

log = logging.getLogger(__name__)
T = TypeVar("T")
_EXIT_CODE = re.compile(r"Exited \((-?\d+)\)")
API_TIMEOUT_SECONDS = 30
EVENT_ACTIONS = ("die", "start", "destroy", "pause", "unpause", "oom")
#: Podman's names of the same events (what its filter matches), read as Docker's.
EVENT_ALIASES = {"died": "die", "remove": "destroy"}
DEFAULT_SOCKET = "/var/run/docker.sock"


def _pilot_from_listing(entry: dict[str, Any]) -> Pilot:
    labels = entry.get("Labels") or {}
    try:
        created = float(labels.get(LABEL_CREATED, entry.get("Created", 0)))
    except ValueError:
        created = float(entry.get("Created", 0))
    match = _EXIT_CODE.search(entry.get("Status") or "")
    names = entry.get("Names") or ["/?"]
    return Pilot(
        id=entry["Id"],
        name=names[0].lstrip("/"),
        state=entry.get("State", "unknown"),
        created=created,
        image=labels.get(LABEL_IMAGE) or entry.get("Image", ""),
        exit_code=int(match.group(1)) if match else None,
        spare=labels.get(LABEL_SPARE) == "true",
        digest=labels.get(LABEL_SPEC, ""),
        image_id=entry.get("ImageID", ""),
    )


def is_ours(labels: dict[str, str] | None, instance: str) -> bool:
    """Return whether a container's (or an event's) labels mark it as a pilot of ``instance``."""
    return (labels or {}).get(LABEL_INSTANCE) == instance


def engine_identity(version: dict[str, Any]) -> tuple[str, str]:
    """Given the engine's ``/version`` answer, return its name and version: ("Podman Engine",
    "4.3.1") from Podman's components, ("Docker Engine", "20.10.24") from Docker's."""
    for component in version.get("Components") or []:
        name = str(component.get("Name", ""))
        if name.endswith("Engine") and name != "Engine":
            return name, str(component.get("Version", version.get("Version", "?")))
    return "Docker Engine", str(version.get("Version", "?"))


def event_action(event: dict[str, Any]) -> str:
    """Given one event of the stream, return its action by Docker's name ("die", "destroy")."""
    action = str(event.get("Action") or event.get("status") or "")
    return EVENT_ALIASES.get(action, action)


def socket_path(base_url: str | None) -> str | None:
    """Given the engine's address (None: DOCKER_HOST or the Docker socket), return the path of
    its local socket, or None when it is reached otherwise (tcp, ssh)."""
    address = base_url or docker.utils.kwargs_from_env().get("base_url") or f"unix://{DEFAULT_SOCKET}"
    if address.startswith(("unix://", "http+unix://")):
        return "/" + address.split("://", 1)[1].lstrip("/")
    return None


def socket_server(path: str) -> tuple[int, int] | None:
    """Return the pid and uid of the process that listens on a local socket (the engine, or
    the service manager that holds the socket for it), or None when they cannot be told."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(path)
            credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, _ = struct.unpack("3i", credentials)
    return (int(pid), int(uid)) if pid else None


def _integer(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _describe_connection_error(error: BaseException, base_url: str | None) -> EngineUnavailable:
    text = str(error)
    if base_url is None:
        what, running = "the Docker socket", "is the Docker Engine installed and running?"
    else:
        what = f"the engine socket {base_url} (engine_url)"
        running = "is the engine's API service running (podman.socket, or podman system service --time=0)?"
    if "Permission denied" in text or isinstance(error.__context__, PermissionError):
        fix = (
            "add this user to the docker group (usermod -aG docker USER, then log in again) or run as root"
            if base_url is None
            else "run as root, or set engine_url to a socket of this user (rootless Podman: "
            "unix:///run/user/UID/podman/podman.sock, after systemctl --user enable --now podman.socket)"
        )
        return EnginePermissionDenied(f"permission denied on {what}: {fix}")
    if "No such file" in text or "FileNotFoundError" in text:
        return EngineUnavailable(f"{what} does not exist: {running}")
    answer = text.splitlines()[0][:200] if text else type(error).__name__
    check = "" if base_url is None else "is engine_url the engine's API socket, and "
    return EngineUnavailable(f"{what} does not answer as an engine ({answer}): {check}{running}")


def _refusal(message: str) -> PilotError:
    """Given what the engine said when it refused a request, return the error to raise: a
    :class:`LimitRefused` when the runtime could not set a resource limit."""
    limit = limit_in_error(message)
    return PilotError(message) if limit is None else LimitRefused(message, limit)


class DockerPilots:
    """Pilots of one Plancton instance on one engine that speaks the Docker API (the
    :class:`~plancton.engines.base.Engine` protocol).

    Args:
        instance: the instance name; its label selects the pilots.
        base_url: the engine's address; by default ``DOCKER_HOST`` or the local socket.
    """

    def __init__(self, instance: str, base_url: str | None = None) -> None:
        self.instance = instance
        self.base_url = base_url
        self.api_calls = 0
        self._client: docker.APIClient | None = None
        self._lock = threading.Lock()
        self._events: Any = None
        #: whether a start waits behind the engine's work on a pilot's end (the Docker Engine)
        self._starts_wait_for_ends = True

    def _new_client(self, timeout: float | None) -> docker.APIClient:
        settings = docker.utils.kwargs_from_env()
        if self.base_url:
            settings["base_url"] = self.base_url
        self.api_calls += 1  # the version negotiation is a request too
        return docker.APIClient(version="auto", timeout=timeout, **settings)

    def _api(self) -> docker.APIClient:
        with self._lock:
            if self._client is None:
                self._client = self._new_client(API_TIMEOUT_SECONDS)
            return self._client

    @contextmanager
    def _translated(self, action: str, missing: type[PilotError] = PilotGone) -> Iterator[None]:
        """Translate library errors of one engine request into Plancton's own; ``missing`` is
        what a 404 means for this request (a pilot gone, or an image missing)."""
        try:
            yield
        except docker.errors.ImageNotFound as error:
            raise ImageMissing(f"{action}: not found ({error.explanation})") from error
        except docker.errors.NotFound as error:
            raise missing(f"{action}: not found ({error.explanation})") from error
        except docker.errors.APIError as error:
            if error.status_code is not None and error.status_code >= 500 and "connect" in str(error).lower():
                raise EngineUnavailable(f"{action}: {error.explanation}") from error
            raise _refusal(f"{action}: {error.explanation or error}") from error
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            self._forget_client()
            raise _describe_connection_error(error, self.base_url) from error
        except docker.errors.DockerException as error:
            self._forget_client()
            raise _describe_connection_error(error, self.base_url) from error

    def _call(self, action: str, request: Callable[[docker.APIClient], T], missing: type[PilotError] = PilotGone) -> T:
        with self._translated(action, missing):
            client = self._api()
            with self._lock:
                self.api_calls += 1
            return request(client)

    def _forget_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def engine_info(self) -> EngineInfo:
        """Return the engine's version and cgroup setup.

        Raises:
            EngineUnavailable: the engine cannot be reached (EnginePermissionDenied: not allowed).
        """
        info = self._call("engine info", lambda api: api.info())
        name, version = engine_identity(self._call("engine version", lambda api: api.version()))
        self._starts_wait_for_ends = not name.startswith("Podman")
        path = socket_path(self.base_url)
        server = socket_server(path) if path else None
        return EngineInfo(
            version=version,
            cgroup_driver=str(info.get("CgroupDriver", "cgroupfs")),
            cgroup_version=int(info.get("CgroupVersion", "1") or 1),
            name=name,
            server_pid=server[0] if server else None,
            server_uid=server[1] if server else None,
            sets_own_ulimits=name.startswith("Podman"),
        )

    def legacy_pilots(self) -> list[Pilot]:
        """Return the legacy pilots (Plancton 0.6's), in any state: named plancton-worker-*,
        without Plancton's labels (the name filter matches anywhere in a name, so the listing
        is checked here too)."""
        filters = {"name": [LEGACY_PILOT_PREFIX]}
        entries = self._call("list legacy pilots", lambda api: api.containers(all=True, filters=filters))
        return [_pilot_from_listing(entry) for entry in entries if is_legacy_pilot(entry)]

    def list(self) -> list[Pilot]:
        """Return every pilot of this instance, in any state, with one engine request."""
        filters = {"label": [instance_label(self.instance)]}
        entries = self._call("list pilots", lambda api: api.containers(all=True, filters=filters))
        return [_pilot_from_listing(entry) for entry in entries if is_ours(entry.get("Labels"), self.instance)]

    def create_and_start(self, spec: ContainerSpec) -> str:
        """Create and start a pilot; return its id. A pilot that cannot start is removed.

        Raises:
            PilotError: the engine refused to create or start it.
        """
        container = self.create(spec)
        try:
            self.start(container)
        except PilotError:
            self.remove(container)
            raise
        return container

    def create(self, spec: ContainerSpec) -> str:
        """Create a pilot without starting it; return its id.

        Raises:
            PilotError: the engine refused to create it (ImageMissing: its image is not there).
        """

        def create(api: docker.APIClient) -> str:
            host_config = api.create_host_config(**spec.host_config)
            created = api.create_container(
                image=spec.image,
                command=spec.command,
                name=spec.name,
                hostname=spec.hostname,
                user=spec.user or "",
                labels=spec.labels,
                environment=spec.environment,
                host_config=host_config,
            )
            return str(created["Id"])

        return self._call(f"create pilot {spec.name}", create, missing=ImageMissing)

    def start(self, container: str) -> None:
        """Start a pilot created earlier.

        Raises:
            PilotError: the engine refused to start it.
        """
        self._call(f"start pilot {container[:12]}", lambda api: api.start(container))

    def stop(self, container: str, vacate_seconds: float, paused: bool = False) -> None:
        """Stop a pilot: SIGTERM, then SIGKILL after ``vacate_seconds``. Gone already is fine."""
        if paused:
            self._thaw(container)
        self._ignoring_gone(f"stop {container[:12]}", lambda api: api.stop(container, timeout=round(vacate_seconds)))

    def kill(self, container: str, paused: bool = False) -> None:
        """Kill a pilot at once with SIGKILL. Gone already is fine."""
        self._ignoring_gone(f"kill {container[:12]}", lambda api: api.kill(container))
        if paused:
            self._thaw(container)

    def remove(self, container: str) -> None:
        """Remove a pilot and its anonymous volumes, stopping it first if needed."""
        self._ignoring_gone(f"remove {container[:12]}", lambda api: api.remove_container(container, v=True, force=True))

    def settle(self, container: str) -> None:
        """Return once the engine is done with the end of a pilot (gone already is fine).

        The Docker Engine reports a pilot's ``die`` before it releases the pilot's network and
        mounts, and answers a request about the pilot only after: a start sent meanwhile
        waits behind that work (see docs/benchmarks.md, refill). On Podman, whose cleanup a
        start does not wait behind, it returns at once.
        """
        if self._starts_wait_for_ends:
            self._ignoring_gone(f"inspect {container[:12]}", lambda api: api.inspect_container(container))

    def pause(self, container: str) -> None:
        """Freeze every process of a pilot (its work is kept)."""
        self._call(f"pause {container[:12]}", lambda api: api.pause(container))

    def unpause(self, container: str) -> None:
        """Thaw a paused pilot."""
        self._call(f"unpause {container[:12]}", lambda api: api.unpause(container))

    def _ignoring_gone(self, action: str, request: Callable[[docker.APIClient], Any]) -> None:
        with suppress(PilotGone):
            self._call(action, request)

    def _thaw(self, container: str) -> None:
        """Thaw a pilot that was paused, so that a signal reaches it; one that is gone or no
        longer paused is fine. The engines say "not paused" only in words (Docker with a 500,
        Podman with a 500 too), so the pilot's state is asked instead, only when it failed."""
        try:
            self._call(f"unpause {container[:12]}", lambda api: api.unpause(container))
        except PilotGone:
            pass
        except PilotError:
            if self._state(container) == "paused":
                raise

    def _state(self, container: str) -> str | None:
        """Return a pilot's state ("running", "paused" ...), or None when it is gone."""
        try:
            found = self._call(f"inspect {container[:12]}", lambda api: api.inspect_container(container))
        except PilotGone:
            return None
        return str((found.get("State") or {}).get("Status", ""))

    def image_present(self, reference: str) -> bool:
        """Return whether the image is in the engine's local store."""
        return self.image_id(reference) is not None

    def image_id(self, reference: str) -> str | None:
        """Return the id of the image a reference names in the local store, or None."""
        try:
            found = self._call(
                f"inspect image {reference}", lambda api: api.inspect_image(reference), missing=ImageMissing
            )
        except ImageMissing:
            return None
        return str(found["Id"])

    def pull(self, reference: str) -> None:
        """Pull an image from its registry.

        Raises:
            PilotError: the pull failed (registry unreachable, unknown image...).
        """
        repository, _, tag = (
            reference.rpartition(":") if ":" in reference.rsplit("/", maxsplit=1)[-1] else (reference, "", "")
        )

        def pull(api: docker.APIClient) -> None:
            for line in api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in line:
                    raise PilotError(f"pull {reference}: {line['error']}")

        self._call(f"pull {reference}", pull, missing=ImageMissing)

    def watch_events(self, on_event: Callable[[str, str, int | None], None], since: int | None = None) -> None:
        """Call ``on_event(action, container id, exit code)`` for each event of this instance's
        pilots (the exit code comes with "die" events only), from ``since`` (Unix seconds; the
        engine replays what happened since then) or from now.

        Blocks until the stream ends or :meth:`close_events` is called.

        Raises:
            EngineUnavailable: the engine cannot be reached or the stream broke.
        """
        actions = [*EVENT_ACTIONS, *EVENT_ALIASES]
        filters = {"type": ["container"], "event": actions, "label": [instance_label(self.instance)]}
        with self._translated("watch events"):
            # a client of its own without a read timeout: a quiet stream is not a broken one
            client = self._new_client(None)
            try:
                stream = client.events(decode=True, filters=filters, since=since)
                with self._lock:
                    self.api_calls += 1
                    self._events = stream
                for event in stream:
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    if is_ours(attributes, self.instance):
                        code = attributes.get("exitCode")
                        on_event(event_action(event), str(event.get("id", "")), _integer(code))
            finally:
                with self._lock:
                    self._events = None
                client.close()

    def close_events(self) -> None:
        """End a running :meth:`watch_events` (safe to call from another thread)."""
        with self._lock:
            stream = self._events
        if stream is not None:
            try:
                stream.close()
            except Exception:
                log.debug("closing the event stream failed", exc_info=True)
