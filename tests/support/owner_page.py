"""The owner's page in a real browser: Debian's Chromium driven by selenium through Debian's
chromedriver, and a daemon whose ledger and CPU history hold known, non-trivial figures.

Used by tests/test_page.py and by the command that writes docs/owner-page.png
(``python -m tests.support.page_screenshot``), so that the screenshot shows what the test checks.
"""

import datetime
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from plancton.control import ledger
from plancton.control.history import FORMAT_VERSION, history_path
from plancton.control.ledger import Day, Ledger
from tests.conftest import STEADY_POLICY, Installation

CHROMIUM = "/usr/bin/chromium"
#: The name under which Chromium reaches this host as a DNS rebinding would: a web page's own.
REBOUND_NAME = "rebound.example"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Chromium talks to nothing but the page: no updates, sync, safe-browsing or first-run fetches.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root, Chromium starts only without its sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    # a web page's name that its DNS has rebound to this host, as an attacker would
    f"--host-resolver-rules=MAP {REBOUND_NAME} 127.0.0.1",
)
#: How long the page may take to render, and the daemon's pilots to start.
RENDER_SECONDS = 60
#: The daemon of the page's tests: two pilots that sleep, on a host whose owner never counts as busy.
DAEMON_CONFIG = STEADY_POLICY + "max_docks: 2\ndocker_cmd: sleep 600\nvacate_time: 1\n"
#: The host of the seeded history: two cores.
HISTORY_CORES = 2.0


#: planctonctl's option for user mode, which the page's daemon runs in.
USER_MODE = "--user"


#: The seeded days, by how many days back. Each duration is a second past a whole minute
#: and each CPU figure far from a hundredth of a core-hour's edge, so that what the daemon
#: adds while a test runs seldom changes what the page and ``stats`` print.
SEEDED_DAYS: dict[int, Day] = {
    0: Day(
        cpu_seconds=25514.0,
        started=6,
        ended={"finished": 3, "owner": 1},
        lent_seconds=15001.0,
        partly_lent_seconds=4801.0,
        given_way_seconds={"keyboard": 3901.0, "cpu": 1501.0},
    ),
    2: Day(
        cpu_seconds=38266.0,
        started=9,
        ended={"finished": 6, "owner": 2, "ttl": 1},
        lent_seconds=22501.0,
        partly_lent_seconds=7261.0,
        given_way_seconds={"keyboard": 4321.0},
    ),
    5: Day(
        cpu_seconds=55627.0,
        started=11,
        ended={"finished": 8, "memory": 1, "failed": 2},
        lent_seconds=32701.0,
        given_way_seconds={"cpu": 2101.0, "hours": 7201.0},
    ),
    20: Day(
        cpu_seconds=34705.0,
        started=7,
        ended={"finished": 5, "other": 2},
        lent_seconds=20401.0,
        given_way_seconds={"snooze": 3601.0},
    ),
    100: Day(cpu_seconds=42850.0, started=5, ended={"finished": 5}, lent_seconds=25201.0),
}


def seed_ledger(statedir: str, today: datetime.date) -> None:
    """Write a ledger holding :data:`SEEDED_DAYS` before today."""
    days = {(today - datetime.timedelta(days=back)).isoformat(): day for back, day in SEEDED_DAYS.items()}
    os.makedirs(statedir, mode=0o700, exist_ok=True)
    ledger.save(ledger.ledger_path(statedir), Ledger(days=days))


def seed_history(statedir: str, now: float) -> int:
    """Write a CPU history of the last day, minute by minute, with an hour and a half missing
    (the daemon stopped); return how many minutes it holds. The owner works in the day, and
    the pilots take the rest of two cores when the owner does not."""
    generator = random.Random(29)
    minutes: list[list[float]] = []
    first = math.floor((now - 86400) / 60) * 60 + 600
    gap = range(int(first + 14 * 3600), int(first + 15.5 * 3600))
    owner = 0.2
    for start in range(int(first), int(now) - 60, 60):
        moment = time.localtime(start)
        hour = moment.tm_hour + moment.tm_min / 60
        working = 9 <= hour < 12.5 or 13.5 <= hour < 18
        # the owner's load drifts around its level: a little at night, more than a core at work
        level = 1.35 if working else 0.15
        owner = min(HISTORY_CORES, max(0.02, owner + 0.3 * (level - owner) + 0.08 * generator.uniform(-1, 1)))
        pilots = 0.0 if owner > 0.9 else max(0.0, HISTORY_CORES - owner - 0.25 - 0.05 * generator.random())
        if start not in gap:
            minutes.append([float(start), round(owner, 3), round(pilots, 3)])
    os.makedirs(statedir, mode=0o700, exist_ok=True)
    with open(history_path(statedir), "w", encoding="utf-8") as handle:
        json.dump({"version": FORMAT_VERSION, "minutes": minutes}, handle)
    return len(minutes)


def start_daemon(installation: Installation, port: int) -> None:
    """Seed the ledger and the history, then start the daemon in user mode with its page on
    this loopback port.

    Raises:
        RuntimeError: ``planctonctl start`` failed.
    """
    seed_ledger(installation.statedir, datetime.date.today())
    seed_history(installation.statedir, time.time())
    installation.write_config(DAEMON_CONFIG + f"metrics_listen: 127.0.0.1:{port}\n")
    started = installation.ctl(USER_MODE, "start")
    if started.returncode != 0:
        raise RuntimeError(f"planctonctl start failed: {started.stderr}")


def running_pilots(installation: Installation) -> int:
    """Return how many pilots ``planctonctl status`` lists as running."""
    return sum(1 for pilot in installation.status()["pilots"] if pilot["state"] == "running")


def chromium_processes(profile: str) -> list[psutil.Process]:
    """Return the Chromium processes that run with this profile folder."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(profile in argument for argument in process.info["cmdline"] or []):
            found.append(process)
    return found


@contextmanager
def browser(width: int = 1280, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """Yield Debian's Chromium, headless, with a fresh profile and its network log on; quit it
    afterwards and remove the profile.

    Raises:
        RuntimeError: a Chromium process was still there after quitting (it is ended).
    """
    profile = tempfile.mkdtemp(prefix="plancton-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        left = chromium_processes(profile)
        _, alive = psutil.wait_procs(left, timeout=10)
        for process in alive:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)
    if alive:
        raise RuntimeError(f"Chromium left {len(alive)} processes running after quitting: {alive}")


def open_page(driver: webdriver.Chrome, url: str) -> None:
    """Load the page (again) and wait until its script has drawn everything once."""
    driver.get(url)
    WebDriverWait(driver, RENDER_SECONDS).until(
        lambda found: found.execute_script("return document.documentElement.dataset.rendered")
    )


def text_of(driver: webdriver.Chrome, selector: str) -> str:
    """Return the text of the element that a CSS selector finds."""
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """Return every URL the browser asked for since the last call (each page, its script's
    requests, anything a page would load, the browser's own chrome:// pages), from Chromium's
    network log."""
    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message: dict[str, Any] = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(str(message["params"]["request"]["url"]))
    return urls


def save_full_page(driver: webdriver.Chrome, path: str, width: int = 1280) -> None:
    """Save a PNG of the whole page, as wide as given and as tall as the page is.

    Raises:
        RuntimeError: Chromium could not write the file.
    """
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    if not driver.save_screenshot(path):
        raise RuntimeError(f"Chromium could not write {path}")
