"""What the command-line programs print for the user."""

import sys


def say(message: str) -> None:
    """Print a line for the user on stdout."""
    print(message, flush=True)


def complain(message: str, program: str = "planctonctl") -> None:
    """Print a line for the user on stderr, after the program's name."""
    print(f"{program}: {message}", file=sys.stderr, flush=True)
