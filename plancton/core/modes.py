"""The daemon's modes: what it is asked to do with its pilots."""

import enum


class Mode(enum.Enum):
    """What the daemon is asked to do with its pilots."""

    ACTIVE = "active"  # keep the pool full on spare CPU
    DRAINING = "draining"  # start nothing, let pilots finish
    DRAIN_STOP = "drain-stop"  # drain, then the daemon exits when no pilot is left
    FORCE_STOP = "force-stop"  # stop every pilot now, start nothing, keep running
