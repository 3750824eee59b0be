"""Real InfluxDB servers for the tests: Debian's influxd 1.6 on a free loopback port, with its
data in a temporary folder, optionally with authentication (an admin and a write-only user)
and optionally over TLS with a self-signed certificate made by openssl. Stopped by its pid.

Also a server that accepts connections and never answers, to stand for a hung database.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import urllib3

from tests.support.services import StartedProcess

INFLUXD = "influxd"
START_TIMEOUT_SECONDS = 60.0
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-secret-1"
WRITER_USER, WRITER_PASSWORD = "writer", "writer-secret-2"
#: The database that an auth-enabled server from :func:`server_fixture` lets the writer write to.
WRITER_DATABASE = "plancton"

# the test servers use a self-signed certificate on purpose
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_certificate(folder: str) -> tuple[str, str]:
    """Create a self-signed certificate for 127.0.0.1 in the folder; return (cert, key) paths."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [*command, "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@dataclass
class InfluxServer:
    """One influxd started by the tests; ``url()`` gives Plancton's URL for a database."""

    folder: str
    auth: bool = False
    tls: bool = False
    port: int = field(default_factory=free_port)
    process: StartedProcess | None = None

    @property
    def base(self) -> str:
        """The HTTP(S) address of the server."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, database: str, user: str | None = None, password: str | None = None) -> str:
        """Return an ``influxdb_url`` for Plancton: insecure_https when served over TLS."""
        scheme = "insecure_https" if self.tls else "http"
        credentials = f"{user}:{password}@" if user else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}#{database}"

    def write_config(self) -> str:
        """Write influxd's configuration file and return its path."""
        cert, key = make_certificate(self.folder) if self.tls else ("", "")
        text = f"""reporting-disabled = true
bind-address = "127.0.0.1:{free_port()}"
[meta]
  dir = "{self.folder}/meta"
  logging-enabled = false
[data]
  dir = "{self.folder}/data"
  wal-dir = "{self.folder}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {str(self.auth).lower()}
  log-enabled = false
  https-enabled = {str(self.tls).lower()}
  https-certificate = "{cert}"
  https-private-key = "{key}"
[logging]
  level = "warn"
  suppress-logo = true
"""
        path = os.path.join(self.folder, "influxd.conf")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def start(self) -> None:
        """Start influxd (again, with the same data and port) and wait until it answers.

        Raises:
            RuntimeError: it exited or did not answer in time.
        """
        config = os.path.join(self.folder, "influxd.conf")
        if not os.path.exists(config):
            config = self.write_config()
        log_path = os.path.join(self.folder, "influxd.log")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen([INFLUXD, "-config", config], stdout=log, stderr=subprocess.STDOUT)
        self.process = StartedProcess(popen, log_path)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise RuntimeError(f"influxd exited with code {popen.returncode}: {self.process.log_text()[-2000:]}")
            try:
                if requests.get(f"{self.base}/ping", timeout=2, verify=False).status_code == 204:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"influxd did not answer within {START_TIMEOUT_SECONDS:.0f} s")

    def stop(self) -> None:
        """Stop influxd by its pid (its data stays for a restart)."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def query(self, text: str, database: str = "", user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> Any:
        """Run an InfluxQL statement (as the admin when auth is on) and return the results.

        Raises:
            RuntimeError: the server answered with an error.
        """
        auth = (user, password) if self.auth else None
        response = requests.post(
            f"{self.base}/query", params={"q": text, "db": database}, auth=auth, timeout=30, verify=False
        )
        body = response.json()
        if response.status_code != 200 or "error" in body:
            raise RuntimeError(f"{text}: HTTP {response.status_code} {body}")
        for result in body["results"]:
            if "error" in result:
                raise RuntimeError(f"{text}: {result['error']}")
        return body["results"]

    def series(self, text: str, database: str) -> list[dict[str, Any]]:
        """Return the series of one SELECT or SHOW statement (none while the database is missing)."""
        try:
            return list(self.query(text, database)[0].get("series", []))
        except RuntimeError as error:
            if f"database not found: {database}" in str(error):
                return []
            raise

    def rows(self, measurement: str, database: str, where: str = "") -> list[dict[str, Any]]:
        """Return every point of a measurement as a dict of column to value."""
        condition = f" WHERE {where}" if where else ""
        found = []
        for serie in self.series(f'SELECT * FROM "{measurement}"{condition}', database):
            found += [dict(zip(serie["columns"], values, strict=True)) for values in serie["values"]]
        return found

    def setup_users(self, database: str) -> None:
        """Create the admin, the database and a user who may only write to it."""
        self.query(f"CREATE USER {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES")
        self.query(f'CREATE DATABASE "{database}"')
        self.query(f"CREATE USER {WRITER_USER} WITH PASSWORD '{WRITER_PASSWORD}'")
        self.query(f'GRANT WRITE ON "{database}" TO {WRITER_USER}')


def start_influxd(auth: bool = False, tls: bool = False) -> InfluxServer:
    """Start an influxd in a new temporary folder and return it (stop it with :func:`remove`)."""
    server = InfluxServer(tempfile.mkdtemp(prefix="plancton-influxd-"), auth=auth, tls=tls)
    try:
        server.start()
    except Exception:
        shutil.rmtree(server.folder, ignore_errors=True)
        raise
    return server


def remove(server: InfluxServer) -> None:
    """Stop the server and delete its data."""
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)


class SilentServer:
    """A loopback TCP server that accepts connections and never answers (a hung database)."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.accepted.append(connection)

    def close(self) -> None:
        """Close the listener and every connection it accepted."""
        self._closing.set()
        self._thread.join(timeout=5)
        self.listener.close()
        for connection in self.accepted:
            connection.close()


def server_fixture(auth: bool = False, tls: bool = False) -> Any:
    """Return a module-scoped pytest fixture giving a started influxd, removed afterwards;
    with auth, the admin, :data:`WRITER_DATABASE` and its write-only user exist."""

    @pytest.fixture(scope="module")
    def server() -> Iterator[InfluxServer]:
        started = start_influxd(auth=auth, tls=tls)
        try:
            if auth:
                started.setup_users(WRITER_DATABASE)
            yield started
        finally:
            remove(started)

    return server
