"""Configuration: every key with its type, default, range and meaning, and the loader that
validates a YAML file into an immutable :class:`Config`.

The keys live in one place, the fields of :class:`Config`: the type is the field's, the
default its default, and its metadata holds the parser of the YAML value (which enforces
the allowed range) and a one-line description. :func:`load` reads a file with YAML's safe
loader only, reports every problem of the file at once, and never evaluates anything but
the arithmetic of ``max_docks`` (through :mod:`plancton.expression`).
"""

import dataclasses
import difflib
import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from plancton import units
from plancton.errors import ConfigError, ExpressionError
from plancton.expression import evaluate

#: A configuration is a few kilobytes; anything much larger is a mistake (and slow to parse).
MAX_FILE_BYTES = 256 * 1024
DEFAULT_REVISION = "defaults"
#: Most pilots any ``max_docks`` may ask for.
MAX_POOL_SIZE = 10000
#: A file written less than this long ago may be half-written: the daemon looks again later.
SETTLE_SECONDS = 1.0

_IMAGE = r"[a-z0-9]+(?:[._/:-][A-Za-z0-9_.-]+)*(?:@sha256:[0-9a-f]{64})?"
_IDENTITY = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?"
_BIND = r"/[^:\x00]*:/[^:\x00]*(?::(?:ro|rw|z|Z)(?:,(?:ro|rw|z|Z))*)?"
_DEVICE = r"/dev/[^:\x00]+(?::/dev/[^:\x00]+)?(?::[rwm]{1,3})?"
_CAPABILITY = r"[+-](?:CAP_)?[A-Z_]+"
#: scheme://[user[:password]@]host:port#database
INFLUXDB_URL = re.compile(
    r"(?P<scheme>https?|insecure_https)://(?:(?P<user>[^:@/\s]+)(?::(?P<password>[^@/\s]*))?@)?"
    r"(?P<host>[^:@/\s]+):(?P<port>\d{1,5})#(?P<database>\S+)"
)
_INFLUXDB_EXAMPLE = '"https://user:password@host:8086#database"'
_HOURS, _DAYS = 3600.0, 86400.0

#: Binds that hand a pilot the host: refused unless ``allow_dangerous_binds`` is true.
DANGEROUS_BIND_SOURCES = ("/", "/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run")


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


def mask_credentials(url: str) -> str:
    """Given an InfluxDB URL (valid or not), return it with any password replaced by ``****``."""
    match = INFLUXDB_URL.fullmatch(url)
    if match is None:
        # not a valid URL: hide everything that could be a password, to be safe
        return re.sub(r"(://[^:@/\s]*:)\S*@", r"\1****@", url)
    if match.group("password") is None:
        return url
    start, end = match.span("password")
    return f"{url[:start]}****{url[end:]}"


def _parse_influxdb_urls(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if items is None:
        return ()
    expected = f"expected a URL such as {_INFLUXDB_EXAMPLE} or a list of them"
    if not isinstance(items, list):
        raise ValueError(f"{expected}, got {type(value).__name__}")
    for item in items:
        match = INFLUXDB_URL.fullmatch(item) if isinstance(item, str) else None
        if match is None or not 1 <= int(match.group("port")) <= 65535:
            got = units.shown(mask_credentials(item) if isinstance(item, str) else item)
            raise ValueError(f"{expected}, got {got}")
    return tuple(items)


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
            units.matching(r"[a-z][a-z0-9_]{0,30}", "plancton"),
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
            "Seconds between two loops (a pilot exiting or a timer such as grace_kill ending wakes it sooner)",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=key(units.one_of("DEBUG", "INFO", "WARNING", "ERROR"), "Least severe log level recorded"),
    )
    influxdb_url: tuple[str, ...] = field(
        default=(),
        metadata=key(
            _parse_influxdb_urls,
            "InfluxDB targets: scheme://[user:password@]host:port#database (http, https, insecure_https)",
            show=lambda urls: [mask_credentials(url) for url in urls],
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
    network_mode: str = field(
        default="bridge",
        metadata=key(units.matching(r"bridge|host|none|container:[\w.-]+|[\w.-]+", "bridge"), "Network of the pilots"),
    )
    binds: tuple[str, ...] = field(
        default=(),
        metadata=key(
            units.each(units.matching(_BIND, "/cvmfs:/cvmfs")),
            "Host folders in the pilots, host:container[:mode]; read-only unless the mode says rw",
        ),
    )
    allow_dangerous_binds: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Allow binds of /, /run or the Docker socket into pilots"),
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
    docker_privileged: bool = field(
        default=False,
        metadata=key(units.parse_bool, "Run pilots privileged (dangerous; a warning is logged at each start)"),
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


class Fingerprint(NamedTuple):
    """What changes when a file does: its stat fields and a digest of its content."""

    mtime_ns: int
    size: int
    inode: int
    digest: str


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
        ConfigError: the file cannot be read (unreadable, a directory, too large) or parsed
            (not YAML, not a mapping), or any value is invalid; the error names the file and
            lists every problem at once.
    """
    content = read_file(path)
    if content is None:
        return parse({}, facts, source=path)
    return parse(parse_yaml(content, path), facts, source=path, revision=revision_of(content))


def parse(
    raw: dict[Any, Any], facts: HostFacts, source: str = "configuration", revision: str = DEFAULT_REVISION
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
            warnings.append(_unknown_key(name))
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
        problems.append(f"max_docks: {error}, got {units.shown(config.max_docks)}")
    if problems:
        # the unknown keys are listed too: one of them may be the intended spelling of a key
        raise ConfigError(problems + warnings, source)
    return config, [f"{source}: {warning}" for warning in warnings]


def pool_size(config: Config, facts: HostFacts) -> int:
    """Given a config and the host's facts, return how many pilots ``max_docks`` allows.

    Raises:
        ExpressionError: the expression is not allowed, cannot be evaluated, or asks for more
            than :data:`MAX_POOL_SIZE` pilots.
    """
    names = {
        "ncpus": float(facts.ncpus),
        "ram_bytes": float(facts.ram_bytes),
        "swap_bytes": float(facts.swap_bytes),
        "max_dock_mem": float(config.max_dock_mem),
        "max_dock_swap": float(config.max_dock_swap),
    }
    size = max(0, int(evaluate(config.max_docks, names)))
    if size > MAX_POOL_SIZE:
        raise ExpressionError(f"expected at most {MAX_POOL_SIZE} pilots on this host, the expression gives {size}")
    return size


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
            source = "/" + os.path.normpath(bind.split(":", 1)[0]).lstrip("/")
            # a symlink on the host may lead to the socket as well
            if {source, os.path.realpath(source)} & set(DANGEROUS_BIND_SOURCES):
                problems.append(
                    f"binds: {source} would hand the host to the pilots; "
                    "set allow_dangerous_binds: true if that is really wanted"
                )
    return problems


def _unknown_key(name: Any) -> str:
    close = difflib.get_close_matches(str(name)[:100], KEYS, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown key {units.shown(name)} ignored{hint}"


# -- reading the file -----------------------------------------------------------------------


def read_file(path: str) -> bytes | None:
    """Given a path, return the file's content, or None when there is no such file.

    The file is opened without blocking (a FIFO in its place cannot hang the daemon) and
    checked to be a regular file of at most :data:`MAX_FILE_BYTES` before it is read.

    Raises:
        ConfigError: the file is a directory or not a regular file, is too large, is a
            broken symbolic link, or cannot be read.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ConfigError(["is a symbolic link to a file that does not exist"], path) from None
        return None
    except OSError as error:
        raise ConfigError([f"cannot read the file ({error.strerror}); check its permissions"], path) from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(["is a directory; expected a YAML file"], path)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(["is not a regular file (a FIFO, socket or device); expected a YAML file"], path)
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError([f"is {info.st_size} bytes; a configuration is at most {MAX_FILE_BYTES}"], path)
        content = _read_at_most(descriptor, MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError([f"cannot read the file ({error.strerror})"], path) from None
    finally:
        os.close(descriptor)
    if len(content) > MAX_FILE_BYTES:
        raise ConfigError([f"is larger than {MAX_FILE_BYTES} bytes; a configuration is at most that"], path)
    return content


def _read_at_most(descriptor: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(descriptor, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def revision_of(content: bytes) -> str:
    """Given a file's content, return its revision: the start of its SHA-256 digest."""
    return hashlib.sha256(content).hexdigest()[:12]


def fingerprint(path: str) -> Fingerprint | None:
    """Given a path, return its :class:`Fingerprint` (digest empty when the content cannot be
    read), or None when nothing is there. Never raises.
    """
    try:
        info = os.stat(path)
    except OSError:
        return None
    try:
        content = read_file(path)
    except ConfigError:
        content = None
    digest = hashlib.sha256(content).hexdigest() if content is not None else ""
    return Fingerprint(info.st_mtime_ns, info.st_size, info.st_ino, digest)


def settling(current: Fingerprint | None, now: float) -> bool:
    """Given a file's fingerprint and the wall-clock time, return whether it was written so
    recently (within :data:`SETTLE_SECONDS`) that it may still be half-written.
    """
    return current is not None and 0 <= now - current.mtime_ns / 1e9 < SETTLE_SECONDS


class _StrictSafeLoader(yaml.SafeLoader):
    """YAML's safe loader (no Python objects, ever) that also refuses duplicate keys.

    The pure-Python loader, not libyaml's: deep nesting makes it raise RecursionError,
    where libyaml's recursive composer overflows the C stack and kills the process.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            identity = (key_node.tag, key_node.value)
            if identity in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {units.shown(key_node.value)} (first at line {seen[identity]})",
                    key_node.start_mark,
                )
            seen[identity] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(content: bytes, path: str) -> dict[Any, Any]:
    """Given a file's content, return its YAML mapping (empty for an empty document).

    Raises:
        ConfigError: naming ``path``: not UTF-8, not valid YAML (with its line and column),
            a tag that the safe loader refuses (such as ``!!python/object``), a duplicate key,
            or a document that is not a mapping.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError([f"is not UTF-8 text (byte {error.start + 1})"], path) from None
    try:
        # a subclass of the safe loader: tags such as !!python/object are errors, never run
        data = yaml.load(text, Loader=_StrictSafeLoader)
    except yaml.YAMLError as error:
        raise ConfigError([_yaml_problem(error)], path) from None
    except (ValueError, TypeError, OverflowError) as error:
        # PyYAML lets some values through its own errors, such as a date of month 13
        raise ConfigError([f"invalid YAML value: {error}"], path) from None
    except RecursionError:
        raise ConfigError(["invalid YAML: nested too deeply"], path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"expected a mapping of keys to values, got {_kind(data)}"], path)
    return data


def _kind(data: Any) -> str:
    kinds = {list: "a list", str: "text", int: "a number", float: "a number", bool: "true or false"}
    return kinds.get(type(data), type(data).__name__)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


# -- showing a configuration ------------------------------------------------------------------


def describe(config: Config) -> list[tuple[str, Any, str]]:
    """Given a config, return (key, value, origin) for every key, in the order of
    :class:`Config`; the value is plain YAML data with passwords masked, and the origin is
    "file" or "default".
    """
    return [
        (name, item.metadata["show"](getattr(config, name)), "file" if name in config.from_file else "default")
        for name, item in KEYS.items()
    ]
