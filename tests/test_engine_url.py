"""An engine_url that leads nowhere, or to something that is not an engine: ``planctonctl
start`` says so in one line naming the cause and the fix, and the daemon runs on, retrying with
back-off rather than spinning, until the engine answers there."""

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Engine, Installation, wait_until
from tests.support import services

#: A long main_sleep, so that only the engine's back-off (2, 4, 8 ... s) paces the retries.
CONFIG = "main_sleep: 60s\nmax_docks: 0\n"
UNAVAILABLE = "container engine unavailable"


@pytest.fixture
def installation(tmp_path: "os.PathLike[str]") -> Iterator[Installation]:
    """An installation whose engine_url the test sets; its daemon stopped afterwards."""
    setup = Installation(root=str(tmp_path), instance=f"enginetest{secrets.token_hex(3)}")
    yield setup
    setup.ctl("stop", "--timeout", "20")


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning" in line]


def test_an_absent_engine_socket_is_named_with_its_fix_and_retried_until_it_answers(
    installation: Installation, docker_engine: Engine, tmp_path: "os.PathLike[str]"
) -> None:
    path = os.path.join(tmp_path, "engine", "docker.sock")
    installation.engine_url = f"unix://{path}"
    installation.write_config(CONFIG)
    started = installation.ctl("start")
    assert started.returncode == 0, started.stderr
    said = warning_lines(started.stderr)
    assert len(said) == 1, started.stderr
    assert f"unix://{path} (engine_url) does not exist" in said[0] and "podman.socket" in said[0], said[0]
    wait_until(lambda: installation.state().engine_error, what="the daemon to record the engine's absence")
    began, loops = time.monotonic(), installation.state().loops
    time.sleep(6)
    # back-off: a few tries in 6 s (2, then 4 s apart), one line in the log
    assert installation.state().loops - loops <= 4, (installation.state().loops, loops, time.monotonic() - began)
    assert installation.log().count(UNAVAILABLE) == 1, installation.log()
    assert installation.ctl("status").returncode == 0
    # the engine appears at that address: the daemon manages pilots again without a restart
    os.makedirs(os.path.dirname(path))
    os.symlink(services.DOCKER_SOCKET, path)
    wait_until(lambda: installation.state().engine_error is None, timeout=60, what="the daemon to reach the engine")
    assert "container engine is back" in installation.log()


@pytest.fixture
def not_an_engine(tmp_path: "os.PathLike[str]") -> Iterator[str]:
    """A local socket whose server answers every request with 404, as a web server would; its
    address."""
    path = os.path.join(tmp_path, "web.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    connection.recv(65536)
                    connection.sendall(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
                    )
                except OSError:
                    continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    server.close()
    thread.join(timeout=10)


def test_an_engine_url_that_is_not_an_engine_is_named_with_its_fix(
    installation: Installation, not_an_engine: str
) -> None:
    installation.engine_url = not_an_engine
    installation.write_config(CONFIG)
    started = installation.ctl("start")
    assert started.returncode == 0, started.stderr
    said = warning_lines(started.stderr)
    assert len(said) == 1, started.stderr
    assert f"{not_an_engine} (engine_url) does not answer as an engine" in said[0], said[0]
    assert "is engine_url the engine's API socket" in said[0], said[0]
    wait_until(lambda: installation.state().engine_error, what="the daemon to record the engine's absence")
    assert installation.ctl("status").returncode == 0
    assert installation.log().count(UNAVAILABLE) == 1, installation.log()
