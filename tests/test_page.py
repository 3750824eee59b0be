"""The owner's page (plancton/metrics/page.py and page.html): its JSON and what it refuses,
then a real daemon's page in Debian's headless Chromium, checked against planctonctl."""

import datetime
import functools
import json
import re
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from wsgiref.util import setup_testing_defaults

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.common.by import By

from plancton.cli.output import duration
from plancton.config.listen_address import ListenAddress, parse_listen_address
from plancton.control import ledger
from plancton.control.history import history_path, read_history
from plancton.control.modefiles import read_snooze, write_snooze
from plancton.control.paths import Paths, resolve
from plancton.metrics.page import owner_page_app, page_html, this_host_names
from tests.conftest import Installation, wait_until
from tests.support.influx_server import free_port
from tests.support.owner_page import (
    REBOUND_NAME,
    SEEDED_DAYS,
    USER_MODE,
    browser,
    open_page,
    requested_urls,
    running_pilots,
    seed_history,
    seed_ledger,
    start_daemon,
    text_of,
)

PERIODS = ("today", "last_7_days", "all_time")


# -- the application, called as the server calls it --------------------------------------------


def folders(tmp_path: Path) -> Paths:
    return resolve(
        user_mode=True,
        confdir=str(tmp_path / "conf"),
        rundir=str(tmp_path / "run"),
        logdir=str(tmp_path / "log"),
        statedir=str(tmp_path / "state"),
    )


def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the metrics"]


LOOPBACK = ListenAddress("127.0.0.1", 9810)
#: The names of the host of the tests that listen on every interface.
NODE_NAMES = frozenset({"node1", "node1.example.org"})


def call(
    paths: Paths, method: str, path: str, host: str = "127.0.0.1:9810", address: ListenAddress = LOOPBACK
) -> tuple[str, dict[str, str], bytes]:
    """Call the page's application as wsgiref does, with this Host header, on a host named as
    :data:`NODE_NAMES` says; return the status, headers and body."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD=method, PATH_INFO=path, HTTP_HOST=host)
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(headers))

    app = owner_page_app(paths, metrics_app, address, host_names=lambda: NODE_NAMES)
    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


def test_the_page_loads_nothing_from_elsewhere() -> None:
    html = page_html().decode()
    assert "<script src" not in html and "stylesheet" not in html and "url(" not in html and "@import" not in html
    assert re.findall(r'(?:src|href)="([^"]*)"', html) == ["data:,"]
    assert set(re.findall(r"https?://[^\s\"'`]+", html)) == {"http://www.w3.org/2000/svg"}  # a name, not fetched


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/api/status", "/api/stats", "/api/history"])
def test_anything_but_get_and_head_is_refused(tmp_path: Path, method: str, path: str) -> None:
    status, headers, body = call(folders(tmp_path), method, path)
    assert status == "405 Method Not Allowed"
    assert headers["Allow"] == "GET, HEAD"
    assert body == f"{method} refused: this page is read-only (GET or HEAD)\n".encode()


def test_head_says_what_get_would_send_without_the_body(tmp_path: Path) -> None:
    got = call(folders(tmp_path), "GET", "/")
    head = call(folders(tmp_path), "HEAD", "/")
    assert got[0] == head[0] == "200 OK"
    assert head[1] == got[1] and head[1]["Content-Length"] == str(len(got[2]))
    assert head[2] == b""
    assert "default-src 'none'" in got[1]["Content-Security-Policy"]


def test_the_metrics_stay_with_prometheus_client_and_other_paths_are_not_found(tmp_path: Path) -> None:
    assert call(folders(tmp_path), "GET", "/metrics")[2] == b"the metrics"
    assert call(folders(tmp_path), "POST", "/metrics")[2] == b"the metrics"  # its own rules
    status, _, body = call(folders(tmp_path), "GET", "/favicon.ico")
    assert status == "404 Not Found"
    assert body == b"nothing at /favicon.ico: the page is at /, the metrics at /metrics\n"


# -- DNS rebinding: the Host header must name this host ------------------------------------------

PAGE_PATHS = ["/", "/api/status", "/api/stats", "/api/history", "/favicon.ico"]


def refusal(host: str, answers: str, example: str) -> bytes:
    return (
        f"Host {host!r} refused: Plancton answers here only to {answers} (any other name may be a web "
        f"page's DNS rebinding); open {example}\n"
    ).encode()


@pytest.mark.parametrize("path", [*PAGE_PATHS, "/metrics"])
@pytest.mark.parametrize(
    "host", ["127.0.0.1:9810", "localhost:9810", "[::1]:9810", "LocalHost.:9810", "127.0.0.1", "localhost:2222"]
)
def test_on_loopback_localhost_and_loopback_addresses_are_answered(tmp_path: Path, host: str, path: str) -> None:
    status = call(folders(tmp_path), "GET", path, host)[0]
    assert status == ("404 Not Found" if path == "/favicon.ico" else "200 OK")


@pytest.mark.parametrize("path", [*PAGE_PATHS, "/metrics"])
@pytest.mark.parametrize(
    "host",
    [
        "rebound.example:9810",
        "localhost.rebound.example:9810",
        "127.0.0.1.rebound.example",
        "10.0.0.5:9810",
        "node1:9810",
        "",
    ],
)
def test_on_loopback_any_other_host_is_refused_metrics_too(tmp_path: Path, host: str, path: str) -> None:
    for method in ("GET", "POST"):
        status, headers, body = call(folders(tmp_path), method, path, host)
        assert (status, headers["Content-Type"]) == ("421 Misdirected Request", "text/plain")
        assert body == refusal(host, "localhost, 127.0.0.1 or [::1]", "http://127.0.0.1:9810/")
        assert body.count(b"\n") == 1


@pytest.mark.parametrize("listen", ["0.0.0.0:9810", "[::]:9810", "10.0.0.5:9810"])
@pytest.mark.parametrize(
    "host", ["node1:9810", "NODE1.example.org.:9810", "10.0.0.5:9810", "[fe80::1]:9810", "localhost:9810", "node1"]
)
def test_on_the_network_the_hosts_names_and_any_address_are_answered(tmp_path: Path, listen: str, host: str) -> None:
    address = parse_listen_address(listen)
    for path in ("/", "/api/stats", "/metrics"):
        assert call(folders(tmp_path), "GET", path, host, address)[0] == "200 OK"


@pytest.mark.parametrize("host", ["rebound.example:9810", "node1.rebound.example:9810", "node2:9810"])
def test_on_the_network_the_page_refuses_other_names_but_metrics_answer_any(tmp_path: Path, host: str) -> None:
    address = parse_listen_address("0.0.0.0:9810")
    answers = "node1, node1.example.org, localhost or an IP address"
    for path in PAGE_PATHS:
        status, _, body = call(folders(tmp_path), "GET", path, host, address)
        assert (status, body) == ("421 Misdirected Request", refusal(host, answers, "http://node1:9810/"))
    # the site's Prometheus may scrape by any name: a DNS alias, a load balancer's, service discovery's
    assert call(folders(tmp_path), "GET", "/metrics", host, address)[2] == b"the metrics"


def test_this_hosts_own_name_is_among_the_names_answered() -> None:
    assert socket.gethostname().lower() in this_host_names()
    assert socket.getfqdn().lower() in this_host_names()


def api(paths: Paths, path: str) -> tuple[str, Any]:
    status, headers, body = call(paths, "GET", path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def test_the_json_is_status_and_stats_with_the_snooze_and_the_day_of_history(tmp_path: Path) -> None:
    paths = folders(tmp_path)
    status_line, history = api(paths, "/api/history")
    assert (status_line, history["minutes"]) == ("200 OK", [])  # no file yet: an empty chart, saying where
    assert history["file"] == history_path(paths.statedir)
    seed_ledger(paths.statedir, datetime.date.today())
    written = seed_history(paths.statedir, time.time())
    Path(paths.rundir).mkdir()
    write_snooze(paths.rundir, time.time() - 1)  # over: not shown
    status = api(paths, "/api/status")[1]
    assert status["snooze_until"] is None and status["running"] is False and status["pilots"] == []
    write_snooze(paths.rundir, time.time() + 600)
    assert api(paths, "/api/status")[1]["snooze_until"] == read_snooze(paths.rundir)
    stats = api(paths, "/api/stats")[1]
    assert stats["all_time"]["started"] == sum(day.started for day in SEEDED_DAYS.values())
    assert stats["today"]["lent_seconds"] == SEEDED_DAYS[0].lent_seconds
    assert len(api(paths, "/api/history")[1]["minutes"]) == written == len(read_history(paths.statedir))


def test_a_damaged_ledger_is_an_error_the_page_shows(tmp_path: Path) -> None:
    paths = folders(tmp_path)
    Path(paths.statedir).mkdir()
    Path(ledger.ledger_path(paths.statedir)).write_text("{", encoding="utf-8")
    status, data = api(paths, "/api/stats")
    assert status == "500 Internal Server Error"
    assert data["error"].startswith(f"the ledger {ledger.ledger_path(paths.statedir)} is not valid JSON")


# -- a real daemon's page in a real browser -------------------------------------------------------


def page_ledger(driver: webdriver.Chrome) -> dict[tuple[str, str], str]:
    cells = driver.find_elements(By.CSS_SELECTOR, "#ledger-rows td[data-period]")
    found = {(cell.get_attribute("data-period"), cell.get_attribute("data-row")): cell.text for cell in cells}
    return {(str(period), str(row)): text for (period, row), text in found.items() if row != "group"}


def stats_table(data: dict[str, Any]) -> dict[tuple[str, str], str]:
    """Given ``stats --json``, return what each cell of the page's table must say."""
    table = {}
    for period in PERIODS:
        day = data[period]
        table[(period, "cpu")] = f"{day['cpu_seconds'] / 3600:.2f}"
        table[(period, "lent")] = duration(day["lent_seconds"])
        table[(period, "partly_lent")] = duration(day["partly_lent_seconds"])
        table[(period, "started")] = str(day["started"])
        for ending in data["all_time"]["ended"]:
            table[(period, f"ended:{ending}")] = str(day["ended"].get(ending, 0))
        for reason in data["all_time"]["given_way_seconds"]:
            table[(period, f"given_way:{reason}")] = duration(day["given_way_seconds"].get(reason, 0))
    return table


def page_pilots(driver: webdriver.Chrome) -> set[tuple[str, ...]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#pilot-rows tr[data-id]")
    return {tuple(cell.text for cell in row.find_elements(By.TAG_NAME, "td")[:3]) for row in rows}


def status_pilots(installation: Installation) -> set[tuple[str, ...]]:
    return {(pilot["name"], pilot["id"], pilot["state"]) for pilot in installation.status()["pilots"]}


def page_why(driver: webdriver.Chrome) -> tuple[list[str], list[str]]:
    """Return the holds the page shows and its sentences of why."""
    chips = driver.find_elements(By.CSS_SELECTOR, "#holds [data-hold]")
    return [str(chip.get_attribute("data-hold")) for chip in chips], [
        item.text for item in driver.find_elements(By.CSS_SELECTOR, "#why li")
    ]


def status_why(installation: Installation) -> tuple[list[str], list[str]]:
    status = installation.status()
    return list(status["holds"]), list(status["why"])


def chart_runs(driver: webdriver.Chrome, series: str) -> list[list[float]]:
    """Return the cores each polyline of a series of the chart shows, point by point, read
    back through the chart's own axis (its lowest and highest labelled grid lines)."""
    script = """
      const svg = document.getElementById("chart-svg");
      const level = (line) => line.y1.baseVal.value === line.y2.baseVal.value;
      const levels = [...svg.querySelectorAll("line.grid")].filter(level);
      const labels = [...svg.querySelectorAll("text.axis[text-anchor=end]")];
      return {
        axis: levels.map((line, index) => [Number(labels[index].textContent), line.y1.baseVal.value]),
        runs: [...svg.querySelectorAll(arguments[0])].map((line) =>
          Array.from({ length: line.points.numberOfItems }, (_, index) => line.points.getItem(index).y)),
      };
    """
    drawn = driver.execute_script(script, f"polyline.{series}")
    (low, low_y), (high, high_y) = drawn["axis"][0], drawn["axis"][-1]
    return [[low + (low_y - y) / (low_y - high_y) * (high - low) for y in run] for run in drawn["runs"]]


def chart_cores(driver: webdriver.Chrome, series: str) -> list[float]:
    """Return the cores a series of the chart shows, minute by minute, its lines one after another."""
    return [cores for run in chart_runs(driver, series) for cores in run]


def history_cores(statedir: str, column: int) -> Any:
    """Return the cores of one column of the last day's history, as the chart must draw them
    (to the drawing's precision)."""
    day = [minute[column] for minute in read_history(statedir) if minute[0] > time.time() - 86400]
    return pytest.approx(day, abs=0.005)


def same_after_reload(driver: webdriver.Chrome, url: str, page: Callable[[], Any], truth: Callable[[], Any]) -> None:
    """Assert that the page shows what planctonctl says; the daemon's loops may change a
    figure between the two readings, so a difference is read again a few times."""
    for _ in range(4):
        open_page(driver, url)
        shown, said = page(), truth()
        if shown == said:
            return
    assert shown == said


@pytest.mark.docker
def test_the_owner_page_shows_what_planctonctl_says_and_fetches_only_from_this_host(
    installation: Installation, tmp_path: Path
) -> None:
    statedir, port = installation.statedir, free_port()
    start_daemon(installation, port)
    url = f"http://127.0.0.1:{port}/"
    # two pilots at work (status also lists the spare pilot kept created beside them)
    wait_until(lambda: running_pilots(installation) == 2, 120, "two running pilots in status")

    def stats_json() -> dict[str, Any]:
        done = installation.ctl(USER_MODE, "stats", "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    # browser() fails when a Chromium process outlives driver.quit()
    with browser() as driver:
        open_page(driver, url)
        assert text_of(driver, "#instance") == installation.instance

        # the state and why: lending, with the holds and sentences of status --json
        assert (text_of(driver, "#pill"), text_of(driver, "#headline")) == (
            "Lending",
            "Lending spare CPU: 2 pilots running.",
        )
        same_after_reload(driver, url, lambda: page_why(driver), lambda: status_why(installation))
        assert page_why(driver)[1], "the page shows no sentence of why"

        # the ledger: every cell is what stats --json says, in the form the stats table prints
        same_after_reload(driver, url, lambda: page_ledger(driver), lambda: stats_table(stats_json()))
        shown = page_ledger(driver)
        seeded = sum(day.started for day in SEEDED_DAYS.values())
        assert int(shown[("all_time", "started")]) >= seeded > int(shown[("last_7_days", "started")])
        assert int(shown[("last_7_days", "started")]) > int(shown[("today", "started")]) >= SEEDED_DAYS[0].started
        assert shown[("all_time", "ended:memory")] == "1"

        # the pilots: those of status --json
        same_after_reload(driver, url, lambda: page_pilots(driver), lambda: status_pilots(installation))
        assert [pilot[2] for pilot in page_pilots(driver)].count("running") == 2

        # the chart: each series is the history's, minute by minute, in two lines where the
        # daemon was stopped; the seeded day has the owner at work and the pilots around it
        for series, column in (("owner", 1), ("pilots", 2)):
            shown_cores = functools.partial(chart_cores, driver, series)
            same_after_reload(driver, url, shown_cores, functools.partial(history_cores, statedir, column))
        owner, pilots = chart_runs(driver, "owner"), chart_runs(driver, "pilots")
        assert len(owner) >= 2 and [len(run) for run in pilots] == [len(run) for run in owner]
        assert max(map(max, owner)) > 1 and max(map(max, pilots)) > 1
        assert "minutes recorded in the last 24 hours" in text_of(driver, "#chart-note")

        # a snooze shows with its end, and the daemon's hold for it
        assert installation.ctl(USER_MODE, "snooze", "2h").returncode == 0
        until = read_snooze(installation.rundir)
        assert until is not None
        wait_until(lambda: "snooze" in installation.status()["holds"], 60, "the snooze's hold in status")
        same_after_reload(driver, url, lambda: page_why(driver), lambda: status_why(installation))
        assert "snooze" in page_why(driver)[0]
        snooze = driver.find_element(By.ID, "snooze")
        assert float(str(snooze.get_attribute("data-until"))) == pytest.approx(until)
        assert f"Snoozed until {time.strftime('%H:%M', time.localtime(until))}" in snooze.text
        assert text_of(driver, "#pill") == "Snoozed"
        assert installation.ctl(USER_MODE, "snooze", "--cancel").returncode == 0
        open_page(driver, url)
        assert text_of(driver, "#pill") != "Snoozed" and "No snooze" in text_of(driver, "#snooze")

        # a drain deadline shows with its time and who set it, and goes with resume
        assert installation.ctl(USER_MODE, "drain", "--by", "1h").returncode == 0
        wait_until(lambda: installation.status()["drain_by"] is not None, 60, "the deadline in status")
        drain_by = installation.status()["drain_by"]
        open_page(driver, url)
        deadline = driver.find_element(By.ID, "deadline")
        assert float(str(deadline.get_attribute("data-deadline"))) == pytest.approx(drain_by["deadline"])
        when = time.localtime(drain_by["deadline"])
        shown_as = time.strftime("%H:%M" if when[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M", when)
        assert f"Drain deadline {shown_as} (in " in deadline.text and drain_by["source"] in deadline.text
        assert installation.ctl(USER_MODE, "resume").returncode == 0
        wait_until(lambda: installation.status()["drain_by"] is None, 60, "the deadline gone from status")
        open_page(driver, url)
        assert not driver.find_element(By.ID, "deadline").is_displayed()

        # everything the browser asked for over the network came from this daemon (its own
        # chrome:// pages, such as the blank tab it starts with, and data: URLs are no request)
        urls = requested_urls(driver)
        assert {f"{url}api/status", f"{url}api/stats", f"{url}api/history", url} <= set(urls)
        network = [found for found in urls if urlsplit(found).scheme not in ("chrome", "data")]
        assert all(found.startswith(url) for found in network), network

        # a web page's name rebound to this host gets the refusal, not the figures
        driver.get(f"http://{REBOUND_NAME}:{port}/api/status")
        refusal_line = f"Host '{REBOUND_NAME}:{port}' refused: Plancton answers here only to localhost"
        assert text_of(driver, "body").startswith(refusal_line)

    # read-only, and the metrics are where they were
    refused = requests.post(url, data=b"x", timeout=10)
    assert (refused.status_code, refused.headers["Allow"]) == (405, "GET, HEAD")
    assert "plancton_build_info" in requests.get(f"{url}metrics", timeout=10).text
    rebound = requests.get(f"{url}metrics", headers={"Host": f"{REBOUND_NAME}:{port}"}, timeout=10)
    assert (rebound.status_code, rebound.text.startswith(refusal_line)) == (421, True)
    assert f"the owner's page at {url}" in installation.log()
