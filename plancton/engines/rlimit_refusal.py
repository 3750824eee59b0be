"""A container runtime's refusal to set a pilot's resource limit: which limit it is about.

The engines pass the runtime's words on as an error's text (runc's "error setting rlimit type
7", crun's "setrlimit `RLIMIT_NOFILE`") and docker-py has no type for them, so this is read
here, at the adapter, once; the daemon sees a :class:`~plancton.errors.LimitRefused`.
"""

import re

#: The kernel's RLIMIT_* numbers, as runc prints them ("error setting rlimit type 7").
_KERNEL_NUMBERS = {
    0: "cpu",
    1: "fsize",
    2: "data",
    3: "stack",
    4: "core",
    5: "rss",
    6: "nproc",
    7: "nofile",
    8: "memlock",
    9: "as",
    10: "locks",
    11: "sigpending",
    12: "msgqueue",
    13: "nice",
    14: "rtprio",
    15: "rttime",
}

_RUNC_TYPE = re.compile(r"rlimit type (\d+)", re.IGNORECASE)
_CRUN_NAME = re.compile(r"RLIMIT_([A-Z]+)")


def limit_in_error(text: str) -> str | None:
    """Given an engine's error text, return the name of the limit it could not set ("nofile"
    for runc's "error setting rlimit type 7" or crun's "setrlimit `RLIMIT_NOFILE`"), or None
    when the error is not about a limit.
    """
    if "rlimit" not in text.lower():
        return None
    runc = _RUNC_TYPE.search(text)
    if runc is not None:
        return _KERNEL_NUMBERS.get(int(runc.group(1)), f"type {runc.group(1)}")
    crun = _CRUN_NAME.search(text)
    return crun.group(1).lower() if crun is not None else None
