"""The owner's page: the state, the ledger, the pilots and the last day's CPU, at ``/``.

It is served beside ``/metrics`` by the metrics endpoint's server thread, read-only: the
page (``page.html`` in this package, its style and script inline, nothing fetched from
outside the machine) and the JSON it draws from, read from the files ``planctonctl`` reads:

- ``/api/status``: ``planctonctl status --json``;
- ``/api/stats``: ``planctonctl stats --json``;
- ``/api/history``: the last day's minutes of the owner's and the pilots' CPU
  (:mod:`plancton.control.history`).

Only GET and HEAD are answered; ``/metrics`` stays prometheus_client's own application.

A request must name this host in its ``Host`` header, or it is refused with ``421`` (see
:func:`misdirected`): a web page elsewhere could otherwise read the page's figures by giving
its own name, for a moment, this host's address (DNS rebinding). On loopback that holds for
``/metrics`` too; on any other address ``/metrics`` answers whatever name the site's
Prometheus scrapes by, as opening it to the network chose.
"""

import datetime
import functools
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Collection, Iterable
from importlib import resources
from typing import Any

from plancton.config.listen_address import ListenAddress
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


def this_host_names() -> frozenset[str]:
    """Return this host's own names, lowercase: its host name and its fully qualified name."""
    return frozenset(name.lower() for name in (socket.gethostname(), socket.getfqdn()) if name)


def host_name(header: str) -> str:
    """Given a ``Host`` header, return the name or address it gives, lowercase, without the
    port, the brackets of an IPv6 address or a trailing dot."""
    text = header.strip().lower()
    name = text[1:].partition("]")[0] if text.startswith("[") else text.partition(":")[0]
    return name.removesuffix(".")


def misdirected(header: str, address: ListenAddress, host_names: Callable[[], Collection[str]]) -> str | None:
    """Given a request's ``Host`` header, the address listened on and a function returning this
    host's names, return why the request is refused, or None when the header names this host.

    On loopback only ``localhost`` and loopback addresses (127.0.0.1, [::1]) name it. On any
    other address so do every IP address and the host's own names: a DNS rebinding needs a name
    of the attacker's, and the browser sends that name. The port is not compared: it cannot be
    rebound, and a tunnel (``ssh -L``) may bring the page to another port.
    """
    name = host_name(header)
    try:
        literal = ipaddress.ip_address(name)
    except ValueError:
        literal = None
    if name == "localhost" or (literal is not None and (literal.is_loopback or not address.loopback)):
        return None
    if address.loopback:
        answers, example = "localhost, 127.0.0.1 or [::1]", f"http://{address}/"
    else:
        names = sorted(host_names())
        if name in names:
            return None
        answers = ", ".join([*names, "localhost or an IP address"])
        example = f"http://{names[0]}:{address.port}/" if names else f"http://{address}/"
    return (
        f"Host {header!r} refused: Plancton answers here only to {answers} (any other name may be "
        f"a web page's DNS rebinding); open {example}\n"
    )


def owner_page_app(
    paths: Paths,
    metrics: WsgiApp,
    address: ListenAddress,
    clock: Callable[[], float] = time.time,
    host_names: Callable[[], Collection[str]] = this_host_names,
) -> WsgiApp:
    """Given the installation's folders, the metrics application and the address listened on,
    return the application that serves ``/metrics`` through it and the page and its JSON
    itself, to requests that name this host (on an address other than loopback ``/metrics``
    answers any name). ``host_names`` is asked once, at the first request that needs it."""
    html = page_html()
    own_names = functools.cache(host_names)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO") or "/", environ["REQUEST_METHOD"]
        if path == METRICS_PATH and not address.loopback:
            return metrics(environ, start_response)
        refusal = misdirected(environ.get("HTTP_HOST", ""), address, own_names)
        if refusal is not None:
            status_line, headers, body = "421 Misdirected Request", [("Content-Type", "text/plain")], refusal.encode()
        elif path == METRICS_PATH:
            return metrics(environ, start_response)
        elif method not in READ_METHODS:
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
