"""A real Prometheus for the tests: Debian's ``prometheus`` on a free loopback port, scraping
one target every second, with its data in a temporary folder. Stopped by its pid, its folder
removed.
"""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from tests.support.influx_server import free_port
from tests.support.services import StartedProcess

PROMETHEUS = "prometheus"
START_TIMEOUT_SECONDS = 60.0


class PrometheusServer:
    """One Prometheus scraping ``target`` (host:port) every second.

    Args:
        folder: where its configuration, data and log go.
        target: the address it scrapes, ``/metrics`` there.
    """

    def __init__(self, folder: str, target: str) -> None:
        self.folder = folder
        self.target = target
        self.port = free_port()
        self.process: StartedProcess | None = None

    @property
    def base(self) -> str:
        """The HTTP address of its API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Write the configuration, start Prometheus and wait until it is ready.

        Raises:
            RuntimeError: it exited or was not ready in time.
        """
        config = os.path.join(self.folder, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                f"scrape_configs:\n  - job_name: plancton\n    static_configs:\n      - targets: ['{self.target}']\n"
            )
        log_path = os.path.join(self.folder, "prometheus.log")
        command = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.folder}/data"]
        command += [f"--web.listen-address=127.0.0.1:{self.port}"]
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        self.process = StartedProcess(popen, log_path)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {popen.returncode}: {self.process.log_text()[-2000:]}")
            try:
                if requests.get(f"{self.base}/-/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus was not ready within {START_TIMEOUT_SECONDS:.0f} s")

    def stop(self) -> None:
        """Stop Prometheus by its pid."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def query(self, expression: str) -> list[dict[str, Any]]:
        """Run an instant PromQL query now and return its result vector.

        Raises:
            RuntimeError: Prometheus refused the query.
        """
        response = requests.get(f"{self.base}/api/v1/query", params={"query": expression}, timeout=30)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"{expression}: HTTP {response.status_code} {body}")
        return list(body["data"]["result"])

    def value(self, expression: str) -> float | None:
        """Return the single value of a query, or None when it has no series."""
        result = self.query(expression)
        if not result:
            return None
        assert len(result) == 1, f"{expression}: {len(result)} series"
        return float(result[0]["value"][1])

    def target_health(self) -> str:
        """Return the scrape target's health as Prometheus sees it (up, down, unknown)."""
        targets = requests.get(f"{self.base}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
        return str(targets[0]["health"]) if targets else "unknown"


@contextmanager
def running_prometheus(target: str) -> Iterator[PrometheusServer]:
    """Start a Prometheus scraping ``target`` in a new temporary folder; stop it and remove the
    folder afterwards."""
    server = PrometheusServer(tempfile.mkdtemp(prefix="plancton-prometheus-"), target)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)
