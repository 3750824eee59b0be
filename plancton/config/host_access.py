"""Parsers of what a pilot may reach on the host: binds, devices and capabilities.

They accept the forms legacy Plancton (0.6) accepted, with its meaning, and return
one normal form that :mod:`plancton.engines.spec` hands to Docker:

- a bind is ``host:container[:options]``, the options a comma-separated set of at most one
  access mode (``ro``, ``rw``), one SELinux label (``z``, ``Z``) and one propagation mode
  (``shared``, ``rshared``, ``slave``, ``rslave``, ``private``, ``rprivate``);
- a device is ``/dev/host[:/dev/container][:permissions]``, or the mapping legacy
  Plancton passed to Docker (``PathOnHost``, ``PathInContainer``, ``CgroupPermissions``), which
  becomes that text;
- a capability is ``+NAME`` (add) or ``-NAME`` (drop); a bare ``NAME`` adds, as legacy
  Plancton did, and becomes ``+NAME``.
"""

import re
from typing import Any

from plancton.config import units

BIND_OPTION_GROUPS: tuple[tuple[str, ...], ...] = (
    ("ro", "rw"),
    ("z", "Z"),
    ("shared", "rshared", "slave", "rslave", "private", "rprivate"),
)
_PATH = r"/[^:\x00]*"
_BIND = re.compile(rf"({_PATH}):({_PATH})(?::([^:]*))?")
_DEVICE = re.compile(r"/dev/[^:\x00]+(?::/dev/[^:\x00]+)?(?::[rwm]{1,3})?")
_DEVICE_PERMISSIONS = re.compile(r"[rwm]{1,3}")
_DEVICE_FIELDS = ("PathOnHost", "PathInContainer", "CgroupPermissions")
_CAPABILITY = re.compile(r"([+-]?)((?:CAP_)?[A-Z][A-Z0-9_]*)")


def parse_bind(value: Any) -> str:
    """Given ``host:container[:options]``, return it unchanged once valid.

    Raises:
        ValueError: not two absolute paths, an unknown option, or two options of one kind
            (such as ``ro,rw``).
    """
    match = _BIND.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'expected text such as "/cvmfs:/cvmfs", got {units.shown(value)}')
    options = match.group(3)
    if options is None:
        return str(value)
    known = [option for group in BIND_OPTION_GROUPS for option in group]
    for option in options.split(","):
        if option not in known:
            raise ValueError(
                f"expected bind options among {', '.join(known)}, got {units.shown(option)} in {units.shown(value)}"
            )
    for group in BIND_OPTION_GROUPS:
        chosen = [option for option in options.split(",") if option in group]
        if len(chosen) > 1:
            raise ValueError(
                f"expected at most one of {', '.join(group)}, got {','.join(chosen)} in {units.shown(value)}"
            )
    return str(value)


def parse_device(value: Any) -> str:
    """Given ``/dev/host[:/dev/container][:permissions]`` or legacy Plancton's mapping
    ``{PathOnHost: ..., PathInContainer: ..., CgroupPermissions: ...}``, return the text form.

    Raises:
        ValueError: neither form, or a mapping with other fields.
    """
    expected = 'expected text such as "/dev/fuse" or a mapping with PathOnHost'
    if isinstance(value, dict):
        value = _device_from_mapping(value, expected)
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ValueError(f"{expected}, got {units.shown(value)}")
    return value


def _device_from_mapping(mapping: dict[Any, Any], expected: str) -> str:
    unknown = [name for name in mapping if name not in _DEVICE_FIELDS]
    if unknown or not isinstance(mapping.get("PathOnHost"), str):
        fields = ", ".join(_DEVICE_FIELDS)
        raise ValueError(f"{expected} (fields {fields}), got {units.shown(mapping)}")
    host = mapping["PathOnHost"]
    container = mapping.get("PathInContainer") or host
    permissions = mapping.get("CgroupPermissions") or "rwm"
    if not isinstance(container, str) or not isinstance(permissions, str):
        raise ValueError(f"{expected}, got {units.shown(mapping)}")
    if not _DEVICE_PERMISSIONS.fullmatch(permissions):
        raise ValueError(f"expected CgroupPermissions made of r, w and m, got {units.shown(permissions)}")
    return f"{host}:{container}:{permissions}"


def parse_capability(value: Any) -> str:
    """Given ``+NAME``, ``-NAME`` or a bare ``NAME`` (an add, as in legacy Plancton), return
    ``+NAME`` or ``-NAME``.

    Raises:
        ValueError: not a capability name in capitals.
    """
    match = _CAPABILITY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'expected text such as "+SYS_ADMIN" or "SYS_ADMIN", got {units.shown(value)}')
    return f"{match.group(1) or '+'}{match.group(2)}"


def parse_devices(value: Any) -> tuple[str, ...]:
    """Given a list of devices (or one, or null for none), each as :func:`parse_device`
    takes it, return their text forms.

    Raises:
        ValueError: not a list of devices.
    """
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str | dict) for item in items):
        raise ValueError(f"expected a list of text or mappings, got {units.shown(value)}")
    return tuple(parse_device(item) for item in items)
