"""Where pilots go on this host: their parent cgroup, their limits' ceilings, the freeze room.

The parent cgroup runs at the lowest CPU weight, and under a CPU cap while the pilots lend
part of the host to its owner; the ceilings bound the pilots' default limits; a freeze lifts
that weight for a moment. Prepared once the engine has said how it
runs containers (:meth:`Placement.prepare`); the executor reads it for every pilot it starts
or pauses, the daemon for its state and at exit. The machine-features folder, bound into
every pilot, tells them the drain deadline (:mod:`plancton.control.machinefeatures`).
"""

import logging
from contextlib import AbstractContextManager, nullcontext

from plancton.config.schema import Config
from plancton.config.ulimits import DEFAULT_CAPPED, lowest_hard_limits
from plancton.control import machinefeatures
from plancton.engines.base import EngineInfo
from plancton.platform.cgroups import CGROUP_ROOT, NOT_SET, PilotCgroup
from plancton.platform.rlimits import own_hard_limits, process_hard_limits

log = logging.getLogger(__name__)


class Placement:
    """The pilots' parent cgroup and limits for one instance.

    Args:
        instance: the instance, which names the cgroup.
        features_dir: the machine-features folder bound into the pilots.
        cgroup_root: where the cgroup file systems are mounted.
    """

    def __init__(self, instance: str, features_dir: str, cgroup_root: str = CGROUP_ROOT) -> None:
        self.instance = instance
        self.features_dir = features_dir
        #: the drain deadline the pilots were last told (Unix seconds; None: none)
        self.shutdowntime: float | None = None
        self._told = False
        self.cgroup_root = cgroup_root
        self.cgroup: PilotCgroup | None = None
        #: the pilots' CPU cap in force, in cores (None: none)
        self.cpu_cap: float | None = None
        self._cap_written = False
        self._cap_warning: str | None = None
        #: the hard limits that pilots' default nofile and nproc stay within (none: the engine's own)
        self.ulimit_ceilings: dict[str, int] = {}

    def prepare(self, info: EngineInfo, config: Config) -> PilotCgroup:
        """Given what the engine says of itself, make the pilots' parent cgroup, give it the
        lowest CPU weight, find the ulimit ceilings, and return the cgroup."""
        cgroup = PilotCgroup(self.instance, info.cgroup_driver, info.cgroup_version, self.cgroup_root, info.server_uid)
        self.cgroup = cgroup
        warning = cgroup.set_lowest_weight()
        if warning:
            log.warning("%s", warning)
        self._find_ulimit_ceilings(info, config)
        self._prepare_features()
        return cgroup

    def tell_deadline(self, deadline: float | None) -> None:
        """Tell the pilots the drain deadline (None: there is none) in the machine-features
        folder, when it changed; a failure is logged and tried again at the next call."""
        if self._told and deadline == self.shutdowntime:
            return
        try:
            machinefeatures.publish_shutdowntime(self.features_dir, deadline)
        except OSError as error:
            log.error("cannot write the pilots' shutdowntime in %s: %s", self.features_dir, error.strerror)
            return
        self.shutdowntime, self._told = deadline, True

    def _prepare_features(self) -> None:
        """Make the machine-features folder before any pilot binds it (an engine would make a
        missing one as root, or refuse the pilot)."""
        try:
            machinefeatures.prepare_folder(self.features_dir)
        except OSError as error:
            log.error("cannot make the pilots' machine-features folder %s: %s", self.features_dir, error.strerror)

    @property
    def parent(self) -> str:
        """The ``cgroup_parent`` to give the engine for every pilot (once prepared)."""
        assert self.cgroup is not None, "the placement is prepared before any pilot starts"
        return self.cgroup.docker_parent

    def freeze_room(self) -> AbstractContextManager[None]:
        """Return what a pause request runs within, so that the engine's freezer can freeze the
        pilots (the pilots' cgroup lifts their lowest CPU weight where it must)."""
        return self.cgroup.lifted_for_freeze() if self.cgroup is not None else nullcontext()

    def settle(self) -> None:
        """Give a systemd slice, which systemd creates with the first pilot, the lowest weight
        once it exists."""
        if self.cgroup is not None and self.cgroup.setting == NOT_SET:
            warning = self.cgroup.set_lowest_weight()
            if warning:
                log.warning("%s", warning)
            elif self.cgroup.setting != NOT_SET:
                log.info("pilots' cgroup %s: %s", self.cgroup.docker_parent, self.cgroup.setting)

    def cap(self, cores: float | None) -> None:
        """Cap the pilots' CPU at ``cores`` as a whole (None: lift the cap), when that changes;
        a cap left by an earlier daemon is written over once, whatever it was."""
        if self.cgroup is None or not self.cgroup.exists or (self._cap_written and cores == self.cpu_cap):
            return
        warning = self.cgroup.set_cpu_cap(cores)
        if warning:
            if warning != self._cap_warning:
                log.warning("%s", warning)
            self._cap_warning = warning
            return
        if cores is not None:
            log.info("lending %g cores to the owner's host: the pilots' CPU is capped there", cores)
        elif self.cpu_cap is not None:
            log.info("pilots' CPU cap lifted: the owner no longer needs the host")
        self.cpu_cap, self._cap_written, self._cap_warning = cores, True, None

    def cpu_counter(self) -> tuple[str, float] | None:
        """Return the pilots' CPU counter (what identifies it, and its seconds), or None."""
        return self.cgroup.cpu_counter() if self.cgroup is not None else None

    def describe(self) -> dict[str, str]:
        """Return the parent cgroup and how it was prepared, for the state file (empty before)."""
        if self.cgroup is None:
            return {}
        lent = {"cap": f"{self.cpu_cap:g} cores"} if self.cpu_cap is not None else {}
        return {"parent": self.cgroup.docker_parent, "cpu": self.cgroup.setting, **lent}

    def remove(self) -> None:
        """Remove the pilots' parent cgroup and machine-features folder, when no pilot of this
        instance is left."""
        machinefeatures.remove_folder(self.features_dir)
        if self.cgroup is not None:
            for folder in self.cgroup.remove():
                log.info("removed the pilots' cgroup %s: no pilot left", folder)

    def _find_ulimit_ceilings(self, info: EngineInfo, config: Config) -> None:
        """Where the engine gives containers limits of its own choosing, bound the pilots'
        default limits by Plancton's and the engine process's hard limits, and say once what
        pilots get. Elsewhere pilots inherit the engine's own limits, which the host allows."""
        if not info.sets_own_ulimits:
            self.ulimit_ceilings = {}
            return
        engine_limits = process_hard_limits(info.server_pid) if info.server_pid else {}
        ceilings = lowest_hard_limits(own_hard_limits(), engine_limits)
        if ceilings == self.ulimit_ceilings:
            return
        self.ulimit_ceilings = ceilings
        configured = {name for name, _, _ in config.ulimits}
        shown = ", ".join(f"{name} {ceilings[name]}" for name in DEFAULT_CAPPED if name in ceilings)
        if shown and not configured >= set(DEFAULT_CAPPED):
            source = "Plancton's and the engine's" if engine_limits else "Plancton's"
            log.info(
                "pilots get limits no higher than %s hard limits (%s) unless the ulimits key sets them",
                *(source, shown),
            )
