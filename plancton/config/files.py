"""Safe reading of a configuration file.

A regular file of bounded size, opened without
blocking, parsed with YAML's safe loader only (duplicate keys refused), and its fingerprint
for the watcher that notices a changed file.
"""

import hashlib
import os
import stat
from typing import Any, NamedTuple

import yaml

from plancton.config import units
from plancton.errors import ConfigError

#: A configuration is a few kilobytes; anything much larger is a mistake (and slow to parse).
MAX_FILE_BYTES = 256 * 1024
#: A file written less than this long ago may be half-written: the daemon looks again later.
SETTLE_SECONDS = 1.0


class Fingerprint(NamedTuple):
    """What changes when a file does: its stat fields and a digest of its content."""

    mtime_ns: int
    size: int
    inode: int
    digest: str


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
