"""The owner's page: the state, the ledger, the pilots and the last day's CPU, at ``/``.

It is served beside ``/metrics`` by the metrics endpoint's server thread, read-only: the
page (``page.html`` in this package, its style and script inline, nothing fetched from
outside the machine) and the JSON it draws from, read from the files ``planctonctl`` reads:

- ``/api/status``: ``planctonctl status --json``;
- ``/api/stats``: ``planctonctl stats --json``;
- ``/api/history``: the last day's minutes of the owner's and the pilots' CPU
  (:mod:`plancton.control.history`).

Only GET and HEAD are answered; ``/metrics`` stays prometheus_client's own application.
"""

import datetime
import json
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

from plancton.control import overview
from plancton.control.history import history_path, last_day, read_history
from plancton.control.paths import Paths
from plancton.errors import PlanctonError

#: A WSGI application, as wsgiref calls it.
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

METRICS_PATH = "/metrics"
READ_METHODS = ("GET", "HEAD")
#: The page may run its own script and style and read this server's JSON; nothing else.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON_HEADERS = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]


def status(paths: Paths, now: float) -> dict[str, Any]:
    """Return ``planctonctl status --json``'s figures (they are of the moment they are read)."""
    return overview.status_data(paths)


def stats(paths: Paths, now: float) -> dict[str, Any]:
    """Return ``planctonctl stats --json``'s figures (today is the host's local date).

    Raises:
        PlanctonError: the ledger is damaged or unreadable.
    """
    today = datetime.date.fromtimestamp(now)
    return overview.stats_data(overview.read_ledger(paths.statedir), today, None)


def history(paths: Paths, now: float) -> dict[str, Any]:
    """Return the minutes of the last day, oldest first (none when the file is missing or
    damaged), and the file they come from."""
    minutes = [list(minute) for minute in last_day(read_history(paths.statedir), now)]
    return {"now": now, "file": history_path(paths.statedir), "minutes": minutes}


#: The JSON the page draws from, by path.
API: dict[str, Callable[[Paths, float], dict[str, Any]]] = {
    "/api/status": status,
    "/api/stats": stats,
    "/api/history": history,
}


def page_html() -> bytes:
    """Return the page as it is installed with the package."""
    return resources.files(__package__).joinpath("page.html").read_bytes()


def owner_page_app(paths: Paths, metrics: WsgiApp, clock: Callable[[], float] = time.time) -> WsgiApp:
    """Given the installation's folders and the metrics application, return the application
    that serves ``/metrics`` through it and the page and its JSON itself."""
    html = page_html()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO") or "/", environ["REQUEST_METHOD"]
        if path == METRICS_PATH:
            return metrics(environ, start_response)
        if method not in READ_METHODS:
            status_line, headers, body = _refused(method)
        elif path == "/":
            status_line, headers, body = "200 OK", [("Content-Security-Policy", PAGE_POLICY)], html
            headers.append(("Content-Type", "text/html; charset=utf-8"))
        elif path in API:
            status_line, headers, body = _json(API[path], paths, clock())
        else:
            status_line, headers, body = "404 Not Found", [("Content-Type", "text/plain; charset=utf-8")], b""
            body = f"nothing at {path}: the page is at /, the metrics at {METRICS_PATH}\n".encode()
        start_response(status_line, [*headers, *_COMMON_HEADERS, ("Content-Length", str(len(body)))])
        return [b"" if method == "HEAD" else body]

    return app


def _refused(method: str) -> tuple[str, list[tuple[str, str]], bytes]:
    body = f"{method} refused: this page is read-only (GET or HEAD)\n".encode()
    return "405 Method Not Allowed", [("Allow", ", ".join(READ_METHODS)), ("Content-Type", "text/plain")], body


def _json(
    read: Callable[[Paths, float], dict[str, Any]], paths: Paths, now: float
) -> tuple[str, list[tuple[str, str]], bytes]:
    try:
        data, status_line = read(paths, now), "200 OK"
    except PlanctonError as error:
        data, status_line = {"error": str(error)}, "500 Internal Server Error"
    return status_line, [("Content-Type", "application/json")], json.dumps(data).encode()
