"""The farm's Prometheus, in the hub's network namespace on the farm network, scraping every
node's ``metrics_listen`` and evaluating the shipped alert rules; and a thread inside a
network namespace, through which the tests reach it (the farm network has no route from the
host's own namespace, and needs none).
"""

import ctypes
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests

from tests.farm.layout import NETNS_FOLDER
from tests.farm.ledger import Ledger
from tests.farm.node import in_namespace, spawn, tail
from tests.farm.support import htcondor_pool, prometheus_server, services

CLONE_NEWNET = 0x40000000
PROMETHEUS_PORT = 9090
#: The port of every node's metrics_listen (the site's configuration says it).
METRICS_PORT = 9810
START_SECONDS = 60.0
#: The alert rules Plancton ships, which the farm's Prometheus evaluates.
SHIPPED_RULES = os.path.join(htcondor_pool.REPOSITORY, "etc", "prometheus", "plancton-rules.yml")
#: How long each rule's condition must hold in the farm before its alert fires: the shipped
#: durations (5 minutes for an absent node, 12 hours for a long drain) would make a test wait
#: that long; the farm changes them alone, and keeps every expression and threshold.
FARM_ALERT_FOR = "10s"
FOR_LINE = re.compile(r"^([ \t]+for:[ \t]*)\S+[ \t]*$", re.MULTILINE)


def farm_rules(shipped: str, duration: str = FARM_ALERT_FOR) -> str:
    """Given the text of the shipped rules file, return it with every rule's ``for:`` set to
    ``duration`` and nothing else changed."""
    return FOR_LINE.sub(lambda line: f"{line.group(1)}{duration}", shipped)


T = TypeVar("T")


def _enter_namespace(namespace: str) -> None:
    """Move the calling thread into a network namespace (a thread's own, unlike a process's
    other namespaces): sockets it opens from then on are there."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(os.path.join(NETNS_FOLDER, namespace), encoding="ascii") as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"cannot enter network namespace {namespace}: {os.strerror(number)}")


class NamespaceThread:
    """One worker thread inside a network namespace, to run what must connect there."""

    def __init__(self, namespace: str) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="farm-net", initializer=_enter_namespace,
                                           initargs=(namespace,))  # fmt: skip

    def run(self, function: Callable[..., T], *arguments: Any, **keywords: Any) -> T:
        """Run ``function(*arguments, **keywords)`` in the namespace and return what it
        returns (or raise what it raises)."""
        return self.executor.submit(function, *arguments, **keywords).result()

    def close(self) -> None:
        """End the thread."""
        self.executor.shutdown()


class FarmPrometheus(prometheus_server.PrometheusServer):
    """Prometheus in the hub's namespace, listening on the hub's address, scraping each
    target and evaluating the shipped rules (:func:`farm_rules`) every second; its queries go
    through a thread in that namespace."""

    def __init__(self, folder: str, namespace: str, address: str, targets: list[str], ledger: Ledger) -> None:
        super().__init__(folder, ",".join(targets))
        self.namespace = namespace
        self.address = address
        self.targets = targets
        self.ledger = ledger
        self.port = PROMETHEUS_PORT
        self.thread = NamespaceThread(namespace)

    @property
    def base(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self) -> None:
        """Write the configuration, start Prometheus in the hub and wait until it is ready.

        Raises:
            RuntimeError: it exited or was not ready in time.
        """
        os.makedirs(self.folder, exist_ok=True)
        config = os.path.join(self.folder, "prometheus.yml")
        rules = os.path.join(self.folder, "plancton-rules.yml")
        with open(SHIPPED_RULES, encoding="utf-8") as shipped, open(rules, "w", encoding="utf-8") as handle:
            handle.write(farm_rules(shipped.read()))
        targets = ", ".join(f"'{target}'" for target in self.targets)
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                f"rule_files: ['{rules}']\n"
                f"scrape_configs:\n  - job_name: plancton\n    static_configs:\n      - targets: [{targets}]\n"
            )
        log_path = os.path.join(self.folder, "prometheus.log")
        command = [
            prometheus_server.PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.folder}/data",
            f"--web.listen-address={self.address}:{self.port}",
        ]
        process = spawn(in_namespace(self.namespace, command), log_path, self.ledger)

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited with code {process.returncode}: {tail(log_path)}")
            try:
                return self.thread.run(requests.get, f"{self.base}/-/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        services.poll(ready, START_SECONDS, "the farm's Prometheus to be ready")
        self.process = services.StartedProcess(process, log_path)

    # Every request goes through the hub's thread: from the host's own namespace, the farm's
    # addresses lead out of the machine.

    def query(self, expression: str) -> list[dict[str, Any]]:
        """Run an instant PromQL query now (in the hub) and return its result vector."""
        return self.thread.run(super().query, expression)

    def target_health(self) -> str:
        """Return the first scrape target's health (see :meth:`target_healths` for each)."""
        return self.thread.run(super().target_health)

    def target_healths(self) -> dict[str, str]:
        """Return each scrape target's health as Prometheus sees it (up, down, unknown)."""
        response = self.thread.run(requests.get, f"{self.base}/api/v1/targets", timeout=30)
        return {target["labels"]["instance"]: target["health"] for target in response.json()["data"]["activeTargets"]}

    def alerts(self) -> list[dict[str, Any]]:
        """Return the alerts pending or firing now, each with its labels and state."""
        response = self.thread.run(requests.get, f"{self.base}/api/v1/alerts", timeout=30)
        return list(response.json()["data"]["alerts"])

    def alerting(self, name: str, state: str | None = "firing") -> set[str]:
        """Return the instances (nodes' scrape targets) for which the alert ``name`` is in
        ``state`` now ("firing" or "pending"; None: either)."""
        return {
            alert["labels"].get("instance", "")
            for alert in self.alerts()
            if alert["labels"]["alertname"] == name and state in (None, alert["state"])
        }

    def stop(self) -> None:
        """Stop Prometheus by its pid and end the thread."""
        super().stop()
        self.thread.close()
