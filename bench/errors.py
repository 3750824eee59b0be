"""The benchmark's own error: a scenario that could not be measured."""


class BenchError(Exception):
    """A scenario could not be measured (a wait timed out, the daemon died...)."""
