"""The hard resource limits that processes on this host run with.

Plancton's own and those of another process (the container engine's), so that pilots never
ask for more than they allow.
"""

import resource

#: The limits read here, by their ulimit names, with the kernel's and /proc's names.
_LIMITS = {
    "nofile": (resource.RLIMIT_NOFILE, "Max open files"),
    "nproc": (resource.RLIMIT_NPROC, "Max processes"),
}


def own_hard_limits() -> dict[str, int | None]:
    """Return this process's hard ``nofile`` and ``nproc`` limits (None: unlimited)."""
    limits: dict[str, int | None] = {}
    for name, (number, _) in _LIMITS.items():
        hard = resource.getrlimit(number)[1]
        limits[name] = None if hard == resource.RLIM_INFINITY else hard
    return limits


def process_hard_limits(pid: int, proc: str = "/proc") -> dict[str, int | None]:
    """Given a process id, return its hard ``nofile`` and ``nproc`` limits (None: unlimited)
    from ``/proc/PID/limits``; an unreadable file gives an empty mapping."""
    try:
        with open(f"{proc}/{pid}/limits", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except (OSError, ValueError):
        return {}
    limits: dict[str, int | None] = {}
    for name, (_, title) in _LIMITS.items():
        for line in lines:
            if line.startswith(title + " "):
                fields = line[len(title) :].split()
                hard = fields[1] if len(fields) > 1 else ""
                limits[name] = None if hard == "unlimited" else int(hard) if hard.isdigit() else None
    return limits
