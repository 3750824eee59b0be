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
