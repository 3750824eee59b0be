"""How ``planctonctl config`` shows a configuration.

Every key's value as plain YAML data, passwords masked, and the file it comes from
(config.yaml or an overlay) or that it is the default.
"""

import os
from typing import Any

from plancton.config.schema import KEYS, Config


def describe(config: Config) -> list[tuple[str, Any, str]]:
    """Given a config, return (key, value, origin) for every key, in the order of
    :class:`Config`; the value is plain YAML data with passwords masked, and the origin is the
    overlay that set it (``hosts/NAME.yaml``), else the name of the configuration file when it
    set it, else "default".
    """
    overlays = dict(config.overlay_origins)
    base = os.path.basename(config.source)
    return [
        (
            name,
            item.metadata["show"](getattr(config, name)),
            overlays.get(name, base if name in config.from_file else "default"),
        )
        for name, item in KEYS.items()
    ]
