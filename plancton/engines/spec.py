"""Pure translation of the configuration into the container that Docker creates for a pilot."""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from plancton.config.schema import Config
from plancton.config.ulimits import pilot_ulimits
from plancton.control import machinefeatures

LABEL_INSTANCE = "org.plancton.instance"
LABEL_CREATED = "org.plancton.created"
LABEL_REVISION = "org.plancton.config.schema-revision"
#: The image as the configuration names it (engines may list it otherwise: Podman adds "localhost/").
LABEL_IMAGE = "org.plancton.image"
#: A digest of everything in a pilot's container but its own name, host name and date: a pilot
#: created ahead of need (a spare) is started only while it is what a new pilot would be.
LABEL_SPEC = "org.plancton.spec"
#: Marks a pilot created ahead of need, to be started when a pilot ends (see ``spare_pilot``).
LABEL_SPARE = "org.plancton.spare"
CPU_PERIOD_US = 100_000
#: Per-pilot CPU weight inside the pilots' parent cgroup (the lowest Docker accepts).
PILOT_CPU_SHARES = 2
#: Pilots are the kernel's first choice when memory runs out, never the owner's processes.
PILOT_OOM_SCORE_ADJ = 1000


@dataclass(frozen=True)
class ContainerSpec:
    """Everything Docker needs to create one pilot."""

    image: str
    command: list[str]
    name: str
    hostname: str | None  # None: the engine's default
    user: str | None
    labels: dict[str, str]
    environment: dict[str, str]
    host_config: dict[str, Any] = field(default_factory=dict)


def instance_label(instance: str) -> str:
    """Return the ``key=value`` label filter that selects an instance's pilots."""
    return f"{LABEL_INSTANCE}={instance}"


def read_only_by_default(bind: str) -> str:
    """Given host:container[:mode], return it with ``ro`` added unless it says rw or ro."""
    parts = bind.split(":")
    modes = parts[2].split(",") if len(parts) > 2 else []
    if "rw" not in modes and "ro" not in modes:
        modes.append("ro")
    return ":".join([*parts[:2], ",".join(modes)])


def pilot_hostname(network_mode: str, short_host: str, instance: str, token: str) -> str | None:
    """Return the name a pilot bears: its own, or None (the engine then gives it the host's) on
    the host's network. There a name of its own would resolve nowhere: Docker gives the pilot
    the host's /etc/hosts, and software that looks itself up fails on it (the Work Queue worker
    of Debian 12 then sends its manager an unset name, and is turned away)."""
    return None if network_mode == "host" else f"{short_host}-{instance}-{token}"[:63]


def container_spec(
    config: Config,
    cgroup_parent: str,
    host_name: str,
    token: str,
    created: float,
    ceilings: Mapping[str, int] | None = None,
    features_dir: str | None = None,
) -> ContainerSpec:
    """Given the config, the pilots' cgroup parent, the host's name, a unique token, the
    wall-clock creation time, the hard limits in force (see
    :func:`plancton.config.ulimits.pilot_ulimits`) and the node's machine-features folder
    (None: none; see :mod:`plancton.control.machinefeatures`), return the container to create.
    """
    features = _machine_features(features_dir)
    short_host = host_name.split(".", maxsplit=1)[0][:40] or "host"
    host_config: dict[str, Any] = {
        "cpu_period": CPU_PERIOD_US,
        "cpu_quota": max(1000, round(config.cpus_per_dock * CPU_PERIOD_US)),
        "cpu_shares": PILOT_CPU_SHARES,
        "pids_limit": config.pids_limit,
        "binds": [read_only_by_default(bind) for bind in config.binds] + features.binds,
        "devices": list(config.devices),
        "cap_add": [cap[1:] for cap in config.capabilities if cap.startswith("+")],
        "cap_drop": [cap[1:] for cap in config.capabilities if cap.startswith("-")],
        "security_opt": ["no-new-privileges:true", *config.security_opts],
        "privileged": config.docker_privileged,
        "network_mode": config.network_mode,
        "cgroup_parent": cgroup_parent,
        "oom_score_adj": PILOT_OOM_SCORE_ADJ,
    }
    limits = pilot_ulimits(config.ulimits, ceilings or {})
    if limits:
        host_config["ulimits"] = [{"name": name, "soft": soft, "hard": hard} for name, soft, hard in limits]
    if config.max_dock_mem:
        host_config["mem_limit"] = config.max_dock_mem
        host_config["memswap_limit"] = config.max_dock_mem + config.max_dock_swap
    spec = ContainerSpec(
        image=config.docker_image,
        command=list(config.docker_cmd),
        name=f"{config.instance}-{token}",
        hostname=pilot_hostname(config.network_mode, short_host, config.instance, token),
        user=config.user_group,
        labels={
            LABEL_INSTANCE: config.instance,
            LABEL_CREATED: f"{created:.3f}",
            LABEL_REVISION: config.revision,
            LABEL_IMAGE: config.docker_image,
        },
        environment={
            "PLANCTON_INSTANCE": config.instance,
            "PLANCTON_HOST": host_name,
            **features.environment,
            **dict(config.environment),
        },
        host_config=host_config,
    )
    return replace(spec, labels={**spec.labels, LABEL_SPEC: spec_digest(spec)})


@dataclass(frozen=True)
class _Features:
    binds: list[str]
    environment: dict[str, str]


def _machine_features(features_dir: str | None) -> _Features:
    """Given the node's machine-features folder (None: none), return the bind of it, read-only
    at :data:`plancton.control.machinefeatures.IN_PILOT`, and the variable naming it."""
    if features_dir is None:
        return _Features([], {})
    return _Features(
        [f"{features_dir}:{machinefeatures.IN_PILOT}:ro"], {machinefeatures.VARIABLE: machinefeatures.IN_PILOT}
    )


def spec_digest(spec: ContainerSpec) -> str:
    """Given a pilot's container, return a digest of all of it but what each pilot has of its
    own (its name, its host name's token, its creation date and this digest): two pilots made
    under the same configuration, cgroup parent and limits have the same one."""
    labels = {key: value for key, value in spec.labels.items() if key not in (LABEL_CREATED, LABEL_SPEC, LABEL_SPARE)}
    shared = {
        "image": spec.image,
        "command": spec.command,
        "own_hostname": spec.hostname is not None,
        "user": spec.user,
        "labels": labels,
        "environment": spec.environment,
        "host_config": spec.host_config,
    }
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


def as_spare(spec: ContainerSpec) -> ContainerSpec:
    """Given a pilot's container, return it marked as a spare: created ahead of need."""
    return replace(spec, labels={**spec.labels, LABEL_SPARE: "true"})
