"""How ``planctonctl config`` shows a configuration.

Every key's value as plain YAML data,
passwords masked, and whether it comes from the file or is the default.
"""

from typing import Any

from plancton.config.schema import KEYS, Config


def describe(config: Config) -> list[tuple[str, Any, str]]:
    """Given a config, return (key, value, origin) for every key, in the order of
    :class:`Config`; the value is plain YAML data with passwords masked, and the origin is
    "file" or "default".
    """
    return [
        (name, item.metadata["show"](getattr(config, name)), "file" if name in config.from_file else "default")
        for name, item in KEYS.items()
    ]
