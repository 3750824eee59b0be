"""The configuration's schema: every key with its type, default, range and meaning.

The keys live in one place, the fields of :class:`Config`: the type is the field's, the
default its default, and its metadata holds the parser of the YAML value (which enforces
the allowed range) and a one-line description. :mod:`plancton.config.loader` applies them.
"""

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plancton.config import deadline, host_access, hours, influxdb_url, listen_address, units
from plancton.config import rollout as rollout_key
from plancton.config import ulimits as pilot_limits
from plancton.core.hours import Window

DEFAULT_REVISION = "defaults"
#: Most pilots any ``max_docks`` may ask for.
MAX_POOL_SIZE = 10000

_IMAGE = r"[a-z0-9]+(?:[._/:-][A-Za-z0-9_.-]+)*(?:@sha256:[0-9a-f]{64})?"
_IDENTITY = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?"
_HOURS, _DAYS = 3600.0, 86400.0
#: unix:///absolute/path, tcp:// or http(s)://host:port, ssh://[user@]host[:port]
_ENGINE_URL = re.compile(r"unix:///[^\s]+|(?:tcp|https?)://[\w.-]+:\d{1,5}|ssh://(?:[\w.-]+@)?[\w.-]+(?::\d{1,5})?")


def key(parse: Callable[[Any], Any], description: str, show: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Return the field metadata that makes a dataclass field a configuration key.

    Args:
        parse: turns the YAML value into the field's type, raising ValueError (with what was
            expected) for a wrong type or a value out of range.
        description: one line saying what the key does.
        show: turns the value into what ``planctonctl config`` prints (plain YAML); by
            default tuples become lists and whole numbers lose their ".0".
    """
    return {"parse": parse, "description": description, "show": show or _plain}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _parse_influxdb_urls(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if items is None:
        return ()
    expected = f"expected a URL such as {influxdb_url.EXAMPLE} or a list of them"
    if not isinstance(items, list):
        raise ValueError(f"{expected}, got {type(value).__name__}")
    for item in items:
        try:
            influxdb_url.parse_target(item if isinstance(item, str) else "")
        except ValueError:
            got = units.shown(influxdb_url.mask_credentials(item) if isinstance(item, str) else item)
            raise ValueError(f"{expected}, got {got}") from None
    return tuple(items)


def _parse_metrics_listen(value: Any) -> str | None:
    if value is None or value == "" or value is False:
        return None
    return str(listen_address.parse_listen_address(value))


def _parse_metrics_textfile(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.startswith("/") or not value.endswith(".prom"):
        raise ValueError(
            "expected an absolute path ending in .prom (the textfile collector reads only those), "
            f'such as "/var/lib/prometheus/node-exporter/plancton.prom", got {units.shown(value)}'
        )
    return value


def _parse_engine_url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ENGINE_URL.fullmatch(value):
        raise ValueError(
            "expected the address of a Docker or Podman API socket, such as unix:///run/podman/podman.sock, "
            f"tcp://HOST:2376 or ssh://USER@HOST (empty: DOCKER_HOST or the Docker socket), got {units.shown(value)}"
        )
    return value


def _parse_max_docks(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected a whole number or an expression such as "ncpus - 2", got {units.shown(value)}')
    if isinstance(value, int) and not 0 <= value <= MAX_POOL_SIZE:
        raise ValueError(f"expected a whole number from 0 to {MAX_POOL_SIZE}, got {value}")
    return str(value)


def _parse_user_group(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads 1000 as a number, and even 1000:50 (as 60050, in base 60)
        raise ValueError(f'expected text such as "1000:1000" in quotes, got the number {value}')
    return units.matching(_IDENTITY, "1000:1000")(value)


def _show_environment(value: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(value)


def _show_size(value: int) -> str | int:
    return units.format_size(value) if value else 0


@dataclass(frozen=True)
class Config:
    """The validated configuration of one Plancton instance (read-only)."""

    # -- this instance ---------------------------------------------------------------------
    instance: str = field(
        default="plancton",
        metadata=key(
            units.matching(
                r"[a-z][a-z0-9_]{0,30}", "plancton", "a lowercase letter, then up to 30 lowercase letters, digits or _"
            ),
            "Name of this Plancton instance; its pilots carry it as a label (fixed while it runs)",
        ),
    )
    updateconfig: float = field(
        default=60.0,
        metadata=key(
            units.duration_in_range(0.1, _DAYS),
            "Seconds between two checks of this file for changes (made at each loop)",
        ),
    )
    main_sleep: float = field(
        default=5.0,
        metadata=key(
            units.duration_in_range(0.1, _HOURS),
            "Seconds between two loops (a pilot exiting, the owner's CPU crossing a threshold or a timer such "
            "as grace_kill ending wakes it sooner)",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=key(units.one_of("DEBUG", "INFO", "WARNING", "ERROR"), "Least severe log level recorded"),
    )
    engine_url: str | None = field(
        default=None,
        metadata=key(
            _parse_engine_url,
            "Address of the container engine's API, such as unix:///run/podman/podman.sock "
            "(null: DOCKER_HOST, or the Docker socket; read at start)",
        ),
    )
    influxdb_url: tuple[str, ...] = field(
        default=(),
        metadata=key(
            _parse_influxdb_urls,
            "InfluxDB targets: scheme://[user:password@]host:port#database (http, https, insecure_https); "
            "scheme://:TOKEN@host:port#bucket for a token",
            show=lambda urls: [influxdb_url.mask_credentials(url) for url in urls],
        ),
    )
    influxdb_legacy_series: bool = field(
        default=False,
        metadata=key(
            units.parse_bool,
            "Also write the series of Plancton 0.6 (daemon, container), so that its dashboards keep working",
        ),
    )
    legacy_pilots: str = field(
        default="keep",
        metadata=key(
            units.one_of("keep", "remove"),
            "Legacy pilots (Plancton 0.6's, plancton-worker-*): keep (listed by planctonctl status, "
            "never touched) or remove (stopped with vacate_time, then removed)",
        ),
    )
    metrics_listen: str | None = field(
        default=None,
        metadata=key(
            _parse_metrics_listen,
            "Address of the Prometheus endpoint, HOST:PORT (a port alone: loopback; null: none)",
        ),
    )
    metrics_textfile: str | None = field(
        default=None,
        metadata=key(
            _parse_metrics_textfile,
            "File (*.prom) the Prometheus metrics are written to for node_exporter's textfile collector",
        ),
    )
    # -- the pool ----------------------------------------------------------------------------
    max_docks: str = field(
        default="max(1, ncpus - 2)",
        metadata=key(
            _parse_max_docks,
            "Most pilots at once: a number or an expression over ncpus, ram_bytes, swap_bytes, "
            "max_dock_mem, max_dock_swap with + - * / // % ( ) min max floor ceil",
        ),
    )
    docks_per_loop: int = field(
        default=4,
        metadata=key(units.number_in_range(1, 1000, integer=True), "Most pilots started in one loop"),
    )
    max_starts_per_minute: int = field(
        default=60,
        metadata=key(units.number_in_range(1, 10000, integer=True), "Most pilot starts in any minute"),
    )
    spare_pilot: bool = field(
        default=True,
        metadata=key(
            units.parse_bool,
            "Keep one pilot created, not started, once the pool is full: a pilot's end then costs one "
            "start; made again when the configuration or image changes",
        ),
    )
    max_ttl: float = field(
        default=12 * _HOURS,
        metadata=key(
            units.duration_in_range(1, 365 * _DAYS),
            "Seconds after which a running pilot is stopped and replaced",
        ),
    )
    vacate_time: float = field(
        default=30.0,
        metadata=key(
            units.duration_in_range(0, _HOURS),
            "Seconds between SIGTERM and SIGKILL when a pilot is stopped",
        ),
    )
    # -- giving the host back to its owner ----------------------------------------------------
    owner_busy_percent: float = field(
        default=40.0,
        metadata=key(
            units.number_in_range(1, 100),
            "Owner CPU use (percent of the host, pilots excluded) at which the owner counts as busy",
        ),
    )
    owner_idle_percent: float = field(
        default=20.0,
        metadata=key(
            units.number_in_range(0, 99),
            "Owner CPU use below which the owner counts as idle again (lower than owner_busy_percent)",
        ),
    )
    cpu_pressure_percent: float = field(
        default=50.0,
        metadata=key(
            units.number_in_range(1, 100),
            "CPU pressure (some avg10) that, with the owner above owner_idle_percent, makes it busy at once",
        ),
    )
    pause_delay: float = field(
        default=5.0,
        metadata=key(
            units.duration_in_range(0, 365 * _DAYS),
            "Seconds the owner must be busy before pilots are paused",
        ),
    )
    grace_kill: float = field(
        default=120.0,
        metadata=key(
            units.duration_in_range(0, 365 * _DAYS),
            "Seconds a pilot stays paused for a busy owner before it is stopped",
        ),
    )
    grace_spawn: float = field(
        default=60.0,
        metadata=key(
            units.duration_in_range(0, 365 * _DAYS),
            "Seconds the owner must be idle again, after a busy spell, before new pilots start",
        ),
    )
    mem_floor: int = field(
        default=512 * 1024**2,
        metadata=key(
            units.size_in_range(0),
            "Available host memory below which the youngest pilots are stopped at once",
            show=_show_size,
        ),
    )
    memory_pressure_percent: float = field(
        default=30.0,
        metadata=key(
            units.number_in_range(1, 100),
            "Memory pressure (full avg10) at which the youngest pilot is stopped at once",
        ),
    )
    input_idle: float = field(
        default=0.0,
        metadata=key(
            units.duration_in_range(0, 365 * _DAYS),
            "Pilots run only when no keyboard or mouse was used for this long (0: input is ignored)",
        ),
    )
    run_on_battery: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Keep pilots running on battery (false: they give way as to a busy owner)"),
    )
    run_hours: tuple[Window, ...] = field(
        default=(),
        metadata=key(
            hours.parse_windows,
            'Local times pilots may run in, such as ["Mon-Fri 18:00-08:00", "Sat,Sun"] (none: always)',
            show=lambda windows: [window.text for window in windows],
        ),
    )
    lend_cores: float = field(
        default=0.0,
        metadata=key(
            units.number_in_range(0, 1024),
            "Cores the pilots may keep while the owner is present or busy, instead of giving all of them back "
            "(0: pilots give way entirely)",
        ),
    )
    # -- taking new revisions -----------------------------------------------------------------
    rollout: rollout_key.Rollout = field(
        default=rollout_key.Rollout(),
        metadata=key(
            rollout_key.parse_rollout,
            "Rollout of a revision: {window: 2h} spreads it over 2h by host name; watch: how long pilots are "
            "checked after",
            show=rollout_key.show_rollout,
        ),
    )
    # -- draining before a deadline ------------------------------------------------------------
    drain_by: float | None = field(
        default=None,
        metadata=key(
            deadline.parse_drain_by,
            "Drain deadline, an ISO time with its zone such as 2026-12-05T18:00:00Z: pilots left are stopped "
            "then (null: none)",
            show=lambda moment: deadline.shown(moment) if moment is not None else None,
        ),
    )
    drain_min_runtime: float = field(
        default=600.0,
        metadata=key(
            units.duration_in_range(0, 7 * _DAYS),
            "Seconds a pilot must be able to run before a drain deadline for it to start",
        ),
    )
    # -- what each pilot runs ------------------------------------------------------------------
    docker_image: str = field(
        default="busybox:latest",
        metadata=key(units.matching(_IMAGE, "busybox:latest"), "Image of the pilots, repository[:tag]"),
    )
    pull_policy: str = field(
        default="if-not-present",
        metadata=key(
            units.one_of("always", "if-not-present", "never"),
            "always: pull at start and every image_expiration; if-not-present: pull when missing; never",
        ),
    )
    image_expiration: float = field(
        default=12 * _HOURS,
        metadata=key(
            units.duration_in_range(1, 365 * _DAYS),
            "With pull_policy always: seconds before the image is pulled again",
        ),
    )
    replace_on_image_change: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Stop running pilots of an older image when docker_image changes"),
    )
    docker_cmd: tuple[str, ...] = field(
        default=("sleep", "60"),
        metadata=key(
            units.parse_command,
            "Command of the pilots: a list of arguments, or text split like a shell would (never run by one)",
        ),
    )
    environment: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=key(
            units.parse_environment, "Extra environment variables of the pilots, NAME: value", show=_show_environment
        ),
    )
    user_group: str | None = field(
        default="65534:65534",
        metadata=key(_parse_user_group, 'User and group the pilot command runs as, "uid:gid" (null: the image\'s own)'),
    )
    # -- what each pilot may use ---------------------------------------------------------------
    cpus_per_dock: float = field(
        default=1.0,
        metadata=key(units.number_in_range(0.01, 1024), "CPUs each pilot may use (CFS quota)"),
    )
    max_dock_mem: int = field(
        default=2 * 1024**3,
        metadata=key(units.size_in_range(0), "RAM cap of each pilot (0: no cap)", show=_show_size),
    )
    max_dock_swap: int = field(
        default=0,
        metadata=key(units.size_in_range(0), "Swap each pilot may use on top of its RAM cap", show=_show_size),
    )
    pids_limit: int = field(
        default=1024,
        metadata=key(units.number_in_range(16, 4194304, integer=True), "Most processes in each pilot"),
    )
    ulimits: tuple[pilot_limits.Ulimit, ...] = field(
        default=(),
        metadata=key(
            pilot_limits.parse_ulimits,
            "Resource limits of each pilot, such as {nofile: 1024}; under Podman nofile and nproc "
            "default to the lowest hard limits of Plancton and the engine",
            show=pilot_limits.show_ulimits,
        ),
    )
    network_mode: str = field(
        default="bridge",
        metadata=key(
            units.matching(r"bridge|host|none|container:[\w.-]+|[\w.-]+", "bridge"),
            "Network of the pilots; on the host's network a pilot bears the host's name",
        ),
    )
    binds: tuple[str, ...] = field(
        default=(),
        metadata=key(
            units.each(host_access.parse_bind),
            "Host folders in the pilots, host:container[:options]; read-only unless the options say rw",
        ),
    )
    allow_dangerous_binds: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Allow binds of /, /run or the Docker socket into pilots"),
    )
    devices: tuple[str, ...] = field(
        default=(),
        metadata=key(host_access.parse_devices, "Host devices in the pilots"),
    )
    capabilities: tuple[str, ...] = field(
        default=(),
        metadata=key(units.each(host_access.parse_capability), 'Capabilities: "+CAP" (or "CAP") adds, "-CAP" drops'),
    )
    security_opts: tuple[str, ...] = field(
        default=(),
        metadata=key(
            units.each(units.matching(r"[a-z-]+[=:].+|no-new-privileges", "apparmor=my-profile")),
            "Extra security options (no-new-privileges is always set)",
        ),
    )
    docker_privileged: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Run pilots privileged (dangerous; a warning is logged at each start)"),
    )

    # Not keys: facts of this load.
    pool_size: int = 1
    revision: str = DEFAULT_REVISION
    source: str = "defaults"
    from_file: frozenset[str] = frozenset()
    #: the overlays that applied, in order, and for each key one of them set, its name
    overlays: tuple[str, ...] = ()
    overlay_origins: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HostFacts:
    """The host figures that ``max_docks`` expressions may use, and what overlays select a
    node by (see :mod:`plancton.config.overlays`)."""

    ncpus: int
    ram_bytes: int
    swap_bytes: int
    hostname: str = ""
    labels: frozenset[str] = frozenset()


KEYS: dict[str, dataclasses.Field[Any]] = {
    item.name: item for item in dataclasses.fields(Config) if "parse" in item.metadata
}


def default_value(name: str) -> Any:
    """Given a key's name, return its default value."""
    return KEYS[name].default
