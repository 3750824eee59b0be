"""The one module that talks to InfluxDB: a connection that writes line protocol to a target.

It wraps the ``influxdb`` package (InfluxDB 1.x HTTP API), which is no longer developed. The
rest of Plancton uses only :class:`InfluxTarget`, :class:`InfluxConnection` and the
exceptions below, and hands over points as line protocol (which 2.x also speaks), so a 2.x
client can replace that package here alone. Library errors are translated at this boundary.
InfluxDB 2 and 3 are written to through the same ``/write``, which they keep for version 1
clients, with the target's token in an ``Authorization: Token`` header.
"""

import contextlib
import json
import warnings
from collections.abc import Callable, Sequence

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError
from urllib3.exceptions import InsecureRequestWarning

from plancton.config.influxdb_url import InfluxTarget
from plancton.errors import PlanctonError


class InfluxError(PlanctonError):
    """Points could not be written to an InfluxDB target; ``retry`` says whether they may be
    kept and sent again later (False: the server refused these points themselves).

    Args:
        where: the target's URL, password masked.
        detail: what went wrong, on one line.
    """

    retry = True

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.where = where
        self.detail = detail


class InfluxUnavailable(InfluxError):
    """The server did not answer in time, refused the connection or failed (5xx)."""


class InfluxDenied(InfluxError):
    """The server refused the user name or password, or the user lacks the permission."""


class DatabaseMissing(InfluxError):
    """The target's database does not exist."""


class InfluxRejected(InfluxError):
    """The server refused the points themselves (bad line protocol, field type conflict)."""

    retry = False


class InfluxConnection:
    """Writes line protocol to one target; every request gives up after ``timeout`` seconds.

    Not thread-safe: one connection belongs to one sender thread.
    """

    def __init__(self, target: InfluxTarget, timeout: float) -> None:
        self.target = target
        if target.tls and not target.verify_certificate:
            # insecure_https asks for exactly this; a warning on every request would flood the log
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        self._client = InfluxDBClient(
            host=target.host,
            port=target.port,
            username=target.user,
            password=target.password,
            database=target.database,
            ssl=target.tls,
            verify_ssl=target.verify_certificate,
            timeout=timeout,
            retries=1,
            # with this header, the client sends no user name and password of its own
            headers={"Authorization": f"Token {target.token}"} if target.token else None,
        )

    def write(self, lines: Sequence[str]) -> None:
        """Write points given as line protocol (nanosecond timestamps) to the database.

        Raises:
            InfluxUnavailable, InfluxDenied, DatabaseMissing, InfluxRejected: see each.
        """
        self._call(lambda: self._client.write_points(list(lines), protocol="line"))

    def create_database(self) -> None:
        """Create the target's database (needs an admin user when auth is on).

        Raises:
            InfluxUnavailable, InfluxDenied: see each.
        """
        self._call(lambda: self._client.create_database(self.target.database))

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def _call(self, request: Callable[[], object]) -> None:
        where = self.target.masked
        try:
            request()
        except requests.RequestException as error:
            # the message of a requests error names the host and port, never the password
            raise InfluxUnavailable(where, _short(error)) from None
        except InfluxDBServerError as error:
            raise InfluxUnavailable(where, f"server error {_short(error)}") from None
        except InfluxDBClientError as error:
            raise _client_error(where, error) from None


def _client_error(where: str, error: InfluxDBClientError) -> InfluxError:
    """Given a 4xx answer, return the Plancton exception that says what to do about it."""
    message = _short(error)
    if error.code in (401, 403):
        return InfluxDenied(where, f"{message} (HTTP {error.code}); check the user, password and permissions")
    if error.code == 404 and "database not found" in message:
        return DatabaseMissing(where, message)
    if error.code in (400, 413, 422):
        return InfluxRejected(where, f"points refused: {message} (HTTP {error.code})")
    return InfluxUnavailable(where, f"{message} (HTTP {error.code})")


def _short(error: Exception) -> str:
    """Given a library error, return its message on one line and cut short: the ``error``
    of InfluxDB's JSON answer when there is one."""
    text = str(getattr(error, "content", None) or error)
    with contextlib.suppress(ValueError, TypeError, KeyError):
        text = str(json.loads(text)["error"])
    return " ".join(text.split())[:300]
