"""Configuration: every key with its type, default and meaning, and the loader that validates
a YAML file into an immutable :class:`Config`.

The keys live in one place, the fields of :class:`Config`; each field's metadata holds the
parser of its YAML value and a one-line description. :func:`load` reports every problem of a
file at once and never evaluates anything but the arithmetic of ``max_docks`` (through
:mod:`plancton.expression`).
"""

import dataclasses
import difflib
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from plancton import units
from plancton.errors import ConfigError, ExpressionError
from plancton.expression import evaluate

MAX_FILE_BYTES = 1024 * 1024
DEFAULT_REVISION = "defaults"

_IMAGE = r"[a-z0-9]+(?:[._/:-][A-Za-z0-9_.-]+)*(?:@sha256:[0-9a-f]{64})?"
_IDENTITY = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?"
_BIND = r"/[^:\x00]*:/[^:\x00]*(?::(?:ro|rw|z|Z)(?:,(?:ro|rw|z|Z))*)?"
_DEVICE = r"/dev/[^:\x00]+(?::/dev/[^:\x00]+)?(?::[rwm]{1,3})?"
_CAPABILITY = r"[+-](?:CAP_)?[A-Z_]+"
_INFLUXDB_URL = r"(?:https?|insecure_https)://(?:[^:@/\s]+(?::[^@/\s]*)?@)?[^:@/\s]+:\d{1,5}#\S+"

#: Binds that hand a pilot the host: refused unless ``allow_dangerous_binds`` is true.
DANGEROUS_BIND_SOURCES = ("/", "/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run")


def key(parse: Callable[[Any], Any], description: str) -> dict[str, Any]:
    """Return the field metadata that makes a dataclass field a configuration key."""
    return {"parse": parse, "description": description}


def _parse_max_docks(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected a whole number or an expression such as "ncpus - 2", got {value!r}')
    if isinstance(value, int) and value < 0:
        raise ValueError(f"expected a whole number of at least 0, got {value!r}")
    return str(value)


@dataclass(frozen=True)
class Config:
    """The validated configuration of one Plancton instance (read-only)."""

    instance: str = field(
        default="plancton",
        metadata=key(
            units.matching(r"[a-z][a-z0-9_]{0,30}", "plancton"),
            "Name of this Plancton instance; its pilots carry it as a label",
        ),
    )
    influxdb_url: tuple[str, ...] = field(
        default=(),
        metadata=key(
            units.each(units.matching(_INFLUXDB_URL, "https://user:pass@host:8086#database")),
            "InfluxDB targets: scheme://[user:password@]host:port#database (http, https, insecure_https)",
        ),
    )
    updateconfig: float = field(
        default=60.0,
        metadata=key(units.parse_duration, "Seconds between two checks of this file for changes"),
    )
    image_expiration: float = field(
        default=43200.0,
        metadata=key(units.parse_duration, "With pull_policy always: seconds before the image is pulled again"),
    )
    pull_policy: str = field(
        default="if-not-present",
        metadata=key(
            units.one_of("always", "if-not-present", "never"),
            "always: pull at start and every image_expiration; if-not-present: pull when missing; never",
        ),
    )
    main_sleep: float = field(
        default=5.0,
        metadata=key(units.parse_duration, "Seconds between two loops (an exiting pilot also wakes the loop)"),
    )
    grace_kill: float = field(
        default=120.0,
        metadata=key(units.parse_duration, "Seconds a pilot stays paused for a busy owner before it is stopped"),
    )
    grace_spawn: float = field(
        default=60.0,
        metadata=key(units.parse_duration, "Seconds the owner must be idle again before new pilots start"),
    )
    pause_delay: float = field(
        default=5.0,
        metadata=key(units.parse_duration, "Seconds the owner must be busy before pilots are paused"),
    )
    vacate_time: float = field(
        default=30.0,
        metadata=key(units.parse_duration, "Seconds between SIGTERM and SIGKILL when a pilot is stopped"),
    )
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
    memory_pressure_percent: float = field(
        default=30.0,
        metadata=key(
            units.number_in_range(1, 100),
            "Memory pressure (full avg10) at which the youngest pilot is stopped at once",
        ),
    )
    mem_floor: int = field(
        default=512 * 1024**2,
        metadata=key(units.parse_size, "Available host memory below which the youngest pilots are stopped at once"),
    )
    cpus_per_dock: float = field(
        default=1.0,
        metadata=key(units.number_in_range(0.01, 1024), "CPUs each pilot may use (CFS quota)"),
    )
    max_docks: str = field(
        default="max(1, ncpus - 2)",
        metadata=key(
            _parse_max_docks,
            "Most pilots at once: a number or an expression over ncpus, ram_bytes, swap_bytes, "
            "max_dock_mem, max_dock_swap with + - * / // % min max floor ceil",
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
    max_ttl: float = field(
        default=43200.0,
        metadata=key(units.parse_duration, "Seconds after which a running pilot is stopped and replaced"),
    )
    docker_image: str = field(
        default="busybox:latest",
        metadata=key(units.matching(_IMAGE, "busybox:latest"), "Image of the pilots, repository[:tag]"),
    )
    docker_cmd: tuple[str, ...] = field(
        default=("sleep", "60"),
        metadata=key(
            units.parse_command,
            "Command of the pilots: a list of arguments, or text split like a shell would (never run by one)",
        ),
    )
    docker_privileged: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Run pilots privileged (dangerous; a warning is logged at each start)"),
    )
    max_dock_mem: int = field(
        default=2 * 1024**3,
        metadata=key(units.parse_size, "RAM cap of each pilot"),
    )
    max_dock_swap: int = field(
        default=0,
        metadata=key(units.parse_size, "Swap each pilot may use on top of its RAM cap"),
    )
    pids_limit: int = field(
        default=1024,
        metadata=key(units.number_in_range(16, 4194304, integer=True), "Most processes in each pilot"),
    )
    user_group: str | None = field(
        default="65534:65534",
        metadata=key(
            lambda value: None if value in (None, "") else units.matching(_IDENTITY, "1000:1000")(value),
            'User and group the pilot command runs as, "uid:gid" (null: the image\'s own)',
        ),
    )
    binds: tuple[str, ...] = field(
        default=(),
        metadata=key(
            units.each(units.matching(_BIND, "/cvmfs:/cvmfs")),
            "Host folders in the pilots, host:container[:mode]; read-only unless the mode says rw",
        ),
    )
    devices: tuple[str, ...] = field(
        default=(),
        metadata=key(units.each(units.matching(_DEVICE, "/dev/fuse")), "Host devices in the pilots"),
    )
    capabilities: tuple[str, ...] = field(
        default=(),
        metadata=key(units.each(units.matching(_CAPABILITY, "+SYS_ADMIN")), 'Capabilities: "+CAP" adds, "-CAP" drops'),
    )
    security_opts: tuple[str, ...] = field(
        default=(),
        metadata=key(
            units.each(units.matching(r"[a-z-]+[=:].+|no-new-privileges", "apparmor=my-profile")),
            "Extra security options (no-new-privileges is always set)",
        ),
    )
    network_mode: str = field(
        default="bridge",
        metadata=key(units.matching(r"bridge|host|none|container:[\w.-]+|[\w.-]+", "bridge"), "Network of the pilots"),
    )
    environment: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=key(units.parse_environment, "Extra environment variables of the pilots, NAME: value"),
    )
    replace_on_image_change: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Stop running pilots of an older image when docker_image changes"),
    )
    allow_dangerous_binds: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Allow binds of /, /run or the Docker socket into pilots"),
    )
    log_level: str = field(
        default="INFO",
        metadata=key(units.one_of("DEBUG", "INFO", "WARNING", "ERROR"), "Least severe log level recorded"),
    )

    # Not keys: facts of this load.
    pool_size: int = 1
    revision: str = DEFAULT_REVISION
    source: str = "defaults"
    from_file: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HostFacts:
    """The host figures that ``max_docks`` expressions may use."""

    ncpus: int
    ram_bytes: int
    swap_bytes: int


KEYS: dict[str, dataclasses.Field[Any]] = {
    item.name: item for item in dataclasses.fields(Config) if "parse" in item.metadata
}


def default_value(name: str) -> Any:
    """Given a key's name, return its default value."""
    return KEYS[name].default


def load(path: str, facts: HostFacts) -> tuple[Config, list[str]]:
    """Given a configuration file and the host's facts, return the config and its warnings.

    A missing or empty file gives the defaults. Warnings name unknown keys (with a "did you
    mean" where one is close).

    Raises:
        ConfigError: the file cannot be read or parsed, or any value is invalid; the error
            lists every problem at once.
    """
    raw, revision = _read_mapping(path)
    return parse(raw, facts, source=path, revision=revision)


def parse(
    raw: dict[str, Any], facts: HostFacts, source: str = "configuration", revision: str = DEFAULT_REVISION
) -> tuple[Config, list[str]]:
    """Given a mapping of keys to raw values, return the validated config and its warnings.

    Raises:
        ConfigError: naming ``source``, with one line per problem.
    """
    problems: list[str] = []
    warnings: list[str] = []
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in KEYS:
            warnings.append(_unknown_key(str(name), source))
            continue
        try:
            values[name] = KEYS[name].metadata["parse"](value)
        except ValueError as error:
            problems.append(f"{name}: {error}")
    config = dataclasses.replace(Config(), **values, revision=revision, source=source, from_file=frozenset(values))
    problems += _cross_checks(config)
    try:
        config = dataclasses.replace(config, pool_size=pool_size(config, facts))
    except ExpressionError as error:
        problems.append(f"max_docks: {error}, got {config.max_docks!r}")
    if problems:
        raise ConfigError(problems, source)
    return config, warnings


def pool_size(config: Config, facts: HostFacts) -> int:
    """Given a config and the host's facts, return how many pilots ``max_docks`` allows (>= 0).

    Raises:
        ExpressionError: the expression is not allowed or cannot be evaluated.
    """
    names = {
        "ncpus": float(facts.ncpus),
        "ram_bytes": float(facts.ram_bytes),
        "swap_bytes": float(facts.swap_bytes),
        "max_dock_mem": float(config.max_dock_mem),
        "max_dock_swap": float(config.max_dock_swap),
    }
    return max(0, int(evaluate(config.max_docks, names)))


def _cross_checks(config: Config) -> list[str]:
    problems = []
    if config.owner_idle_percent >= config.owner_busy_percent:
        problems.append(
            f"owner_idle_percent: expected less than owner_busy_percent ({config.owner_busy_percent:g}), "
            f"got {config.owner_idle_percent:g}"
        )
    if config.max_dock_mem and config.max_dock_mem < 6 * 1024**2:
        problems.append(
            f"max_dock_mem: expected at least 6M (Docker's minimum) or 0 for no cap, got {config.max_dock_mem}"
        )
    if not config.allow_dangerous_binds:
        for bind in config.binds:
            source = os.path.normpath(bind.split(":", 1)[0])
            if source in DANGEROUS_BIND_SOURCES:
                problems.append(
                    f"binds: {source} would hand the host to the pilots; "
                    "set allow_dangerous_binds: true if that is really wanted"
                )
    return problems


def _unknown_key(name: str, source: str) -> str:
    close = difflib.get_close_matches(name, KEYS, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"{source}: unknown key {name!r} ignored{hint}"


def _read_mapping(path: str) -> tuple[dict[str, Any], str]:
    """Given a path, return its YAML mapping and content revision (defaults when missing)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return {}, DEFAULT_REVISION
    except OSError as error:
        raise ConfigError([f"cannot read the file ({error.strerror})"], path) from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(["is a directory; expected a YAML file"], path)
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError([f"is {info.st_size} bytes; a configuration is at most {MAX_FILE_BYTES}"], path)
    try:
        with open(path, "rb") as handle:
            content = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError([f"cannot read the file ({error.strerror}); check its permissions"], path) from None
    if len(content) > MAX_FILE_BYTES:
        raise ConfigError([f"is larger than {MAX_FILE_BYTES} bytes"], path)
    revision = hashlib.sha256(content).hexdigest()[:12]
    try:
        data = yaml.safe_load(content.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(["is not UTF-8 text"], path) from None
    except yaml.YAMLError as error:
        raise ConfigError([_yaml_problem(error)], path) from None
    if data is None:
        return {}, revision
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping of keys to values, got {type(data).__name__}"], path)
    return data, revision


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def describe(config: Config) -> list[tuple[str, Any, str]]:
    """Given a config, return (key, value, origin) for every key; origin is "file" or "default"."""
    return [(name, getattr(config, name), "file" if name in config.from_file else "default") for name in KEYS]


def mask_credentials(url: str) -> str:
    """Given an InfluxDB URL, return it with any password replaced by ``****``."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:****@{location}"
