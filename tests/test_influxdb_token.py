"""InfluxDB 2 and 3 through their v1-compatible ``/write``, with a token.

Debian's packages hold InfluxDB 1.6 only, and PyPI InfluxDB's clients, not its server, so
the request Plancton sends is checked at a small HTTP server of the test's own, which records
each request and answers as InfluxDB does (204, or 401 without the right token or password);
the sender, its client and the HTTP exchange are Plancton's real ones.
"""

import base64
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from plancton.config.loader import parse
from plancton.config.schema import HostFacts
from plancton.metrics.influx_reporter import InfluxReporter
from plancton.metrics.reporting import LoopReport
from tests.conftest import wait_until

TOKEN = "s3cr3t-Token_with/slash=="
#: What the server takes: the token, or the user name and password of a version 1 user.
ACCEPTED = {f"Token {TOKEN}", "Basic " + base64.b64encode(b"writer:secret").decode()}
FACTS = HostFacts(ncpus=4, ram_bytes=2**34, swap_bytes=0)
REPORT = LoopReport("active", 1.0, {"running": 1}, "rev", None, 0.1, 1, True)


@dataclass
class Request:
    """One request the server received."""

    path: str
    params: dict[str, list[str]]
    authorization: str
    body: str


class RecordingServer(ThreadingHTTPServer):
    """Records each request; ``/write`` answers 204 with the right token, 401 otherwise."""

    requests: list[Request]


class Handler(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        authorization = self.headers.get("Authorization", "")
        self.server.requests.append(Request(parts.path, parse_qs(parts.query), authorization, body))
        self.send_response(204 if authorization in ACCEPTED else 401)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test's output quiet."""


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    httpd = RecordingServer(("127.0.0.1", 0), Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_points_go_to_write_with_the_token_in_the_authorization_header(server: RecordingServer) -> None:
    port = server.server_address[1]
    reporter = InfluxReporter(host_name="node1")
    reporter.configure(parse({"influxdb_url": f"http://:{TOKEN}@127.0.0.1:{port}#farm"}, FACTS)[0])
    reporter.loop(REPORT)
    wait_until(lambda: server.requests, 30, "a write")
    reporter.close()
    request = server.requests[0]
    assert request.path == "/write"
    assert request.params["db"] == ["farm"]
    assert "u" not in request.params and "p" not in request.params
    assert request.authorization == f"Token {TOKEN}"
    assert request.body.startswith('plancton_daemon,host=node1,instance=plancton mode="active"')
    assert "plancton_sender," in request.body


def test_a_user_and_password_still_go_as_basic_authentication(server: RecordingServer) -> None:
    port = server.server_address[1]
    reporter = InfluxReporter(host_name="node1")
    reporter.configure(parse({"influxdb_url": f"http://writer:secret@127.0.0.1:{port}#farm"}, FACTS)[0])
    reporter.loop(REPORT)
    wait_until(lambda: server.requests, 30, "a write")
    reporter.close()
    assert server.requests[0].authorization == "Basic " + base64.b64encode(b"writer:secret").decode()
