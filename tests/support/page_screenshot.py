"""Write the screenshot of the owner's page that docs/ keeps, from the daemon the page's test runs.

    python -m tests.support.page_screenshot docs/owner-page.png

As root, where tests/run has installed what the tests use: it starts dockerd unless an engine
answers, makes the busybox image unless the engine has one, starts the daemon of
tests/test_page.py (user mode, a seeded ledger and CPU history, two sleeping pilots, the page
on a free loopback port), saves headless Chromium's picture of the whole page, and then
removes all it made: the daemon, its pilots and their cgroup, the image, dockerd, its folders.
"""

import argparse
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from tests.conftest import Installation
from tests.support.influx_server import free_port
from tests.support.owner_page import browser, open_page, running_pilots, save_full_page, start_daemon
from tests.support.services import (
    StartedProcess,
    docker_answers,
    engine_client,
    ensure_busybox_image,
    poll,
    remove_instance,
    start_dockerd,
)

#: The instance name the picture shows.
INSTANCE = "workstation"
#: How long the pilots may take to start.
START_SECONDS = 120.0


@contextlib.contextmanager
def docker_engine(folder: str) -> Iterator[None]:
    """Make sure a Docker Engine with the busybox image answers; undo what that took afterwards."""
    started: StartedProcess | None = None if docker_answers() else start_dockerd(folder)
    made_image = ensure_busybox_image()
    try:
        yield
    finally:
        if made_image:
            with engine_client() as client:
                client.remove_image("busybox:latest", force=True)
        if started is not None:
            started.stop()


@contextlib.contextmanager
def running_daemon(root: str) -> Iterator[str]:
    """Start the page's daemon in a folder; yield its page's address; stop it and remove its pilots."""
    installation = Installation(root=root, instance=INSTANCE)
    port = free_port()
    try:
        start_daemon(installation, port)
        poll(lambda: running_pilots(installation) == 2, START_SECONDS, "two running pilots")
        yield f"http://127.0.0.1:{port}/"
    finally:
        installation.ctl("stop", "--timeout", "20")
        remove_instance(INSTANCE)


def main(argv: list[str] | None = None) -> int:
    """Write the screenshot where the command line says; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.page_screenshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", help="the PNG file to write, such as docs/owner-page.png")
    output = os.path.abspath(parser.parse_args(argv).output)
    folder = tempfile.mkdtemp(prefix="plancton-page-screenshot-")
    try:
        with docker_engine(folder), running_daemon(folder) as url, browser() as driver:
            open_page(driver, url)
            save_full_page(driver, output)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
