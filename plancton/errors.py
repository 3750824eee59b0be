"""Plancton's own exception types: library errors are translated into these at the adapters."""


class PlanctonError(Exception):
    """Base class of every error Plancton raises on purpose."""


class ConfigError(PlanctonError):
    """A configuration file or value is invalid.

    Args:
        problems: every problem found, each one line naming the key and what was expected.
        source: the file the problems were found in, or a short description of the source.
    """

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__(self.describe())

    def describe(self) -> str:
        """Return the problems as a multi-line message headed by the source."""
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        lines = [f"{self.source}: {len(self.problems)} problems:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


class ExpressionError(PlanctonError):
    """An arithmetic expression in the configuration is not allowed or cannot be evaluated."""


class EngineUnavailable(PlanctonError):
    """The Docker Engine cannot be reached (socket missing, refused, or timed out)."""


class EnginePermissionDenied(EngineUnavailable):
    """The Docker socket exists but this user may not use it."""


class PilotError(PlanctonError):
    """The Docker Engine refused an operation on one pilot container or image."""


class PilotGone(PilotError):
    """The pilot container no longer exists on the engine."""


class ImageMissing(PilotError):
    """The image is not in the engine's local store (nor, for a pull, in its registry)."""


class LimitRefused(PilotError):
    """The container runtime could not set one of the pilot's resource limits.

    Args:
        message: what the engine said, for people.
        limit: the limit's name, such as "nofile".
    """

    def __init__(self, message: str, limit: str) -> None:
        self.limit = limit
        super().__init__(message)


class AlreadyRunning(PlanctonError):
    """Another Plancton daemon holds the pidfile lock."""

    def __init__(self, pid: int | None, pidfile: str) -> None:
        self.pid = pid
        self.pidfile = pidfile
        super().__init__(f"Plancton is already running (pid {pid}, pidfile {pidfile})")
