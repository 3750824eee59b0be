"""What the command-line programs print for the user."""

import sys

#: Exit codes, as the LSB gives them for init scripts.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_RELOAD_NOT_RUNNING = 7


def say(message: str) -> None:
    """Print a line for the user on stdout."""
    print(message, flush=True)


def complain(message: str, program: str = "planctonctl") -> None:
    """Print a line for the user on stderr, after the program's name."""
    print(f"{program}: {message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """Return a duration for people, to the two largest units: ``45s``, ``12m 3s``, ``3h 20m``, ``2d 4h``."""
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    if days:
        return f"{days}d {hour}h"
    if hours:
        return f"{hour}h {minute}m"
    return f"{minute}m {second}s" if minute else f"{second}s"
