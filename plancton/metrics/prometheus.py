"""Prometheus: the daemon's metrics over HTTP and in a textfile.

The endpoint is ``metrics_listen``; the file, for node_exporter's textfile collector, is
``metrics_textfile``. Both come from the same reports as the InfluxDB points.

The mapping is pure: :func:`families` turns a :class:`Snapshot` (the last loop's report, the
event counters, the InfluxDB senders' counters) into metric families. The daemon's loop
builds a new snapshot after each loop and event and swaps it in; scrapes are answered by
the endpoint's server thread (prometheus_client's threading WSGI server and application)
from the snapshot in place, so a scrape never waits for the loop nor the loop for a scrape.
Everything lives in a private registry. The same thread serves the owner's page at ``/``
(:mod:`plancton.metrics.page`).
docs/metrics.md lists the metrics beside the InfluxDB fields.
"""

import errno
import logging
import math
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, write_to_textfile
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from plancton import __version__
from plancton.config.listen_address import ListenAddress, parse_listen_address
from plancton.config.schema import Config
from plancton.control.ledger import Day, Ending, GiveWay
from plancton.control.paths import Paths
from plancton.control.updates import FAILURES
from plancton.core.holds import Hold
from plancton.core.modes import Mode
from plancton.metrics.page import owner_page_app
from plancton.metrics.reporting import (
    COUNTED_STATES,
    REASON_TAG_KINDS,
    STOPPING_MODE,
    LoopReport,
    PilotEvent,
    SenderStats,
)

log = logging.getLogger(__name__)

#: The label every metric carries: Prometheus gives ``instance`` to the scraped target itself.
INSTANCE_LABEL = "plancton_instance"
#: Every mode the daemon reports, each a series of ``plancton_mode`` (1 for the current one).
MODES = (*(mode.value for mode in Mode), STOPPING_MODE)
#: Counters of pilot events by kind: (metric name without _total, help).
EVENT_COUNTERS = {
    "started": ("plancton_pilots_started", "Pilots started"),
    "start_failed": ("plancton_pilot_start_failures", "Pilot starts that failed"),
    "exited": ("plancton_pilots_exited", "Pilots that exited and were removed"),
    "stopped": ("plancton_pilots_stopped", "Pilots stopped (SIGTERM, SIGKILL after vacate_time), by reason"),
    "killed": ("plancton_pilots_killed", "Pilots killed at once (SIGKILL), by reason"),
    "paused": ("plancton_pilots_paused", "Pilots paused for the host's owner"),
    "resumed": ("plancton_pilots_resumed", "Pilots resumed"),
}
#: Reasons whose counters exist (at 0) before the first such event, so increase() sees the first.
KNOWN_REASONS = {"stopped": ("ttl", "owner reclaim", "force-stop", "deadline", "image changed"), "killed": ("memory",)}
#: How often a taken or refused listen address is tried again.
LISTEN_RETRY_SECONDS = 30.0
#: The textfile is written after each loop, but not more often than this.
TEXTFILE_MIN_SECONDS = 1.0
#: How long stopping the endpoint may wait for its server thread.
CLOSE_SECONDS = 3.0


@dataclass(frozen=True)
class Snapshot:
    """What the metrics say at one moment.

    Attributes:
        instance: the ``instance`` key, the ``plancton_instance`` label.
        report: the last loop's report (None before the first loop).
        events: pilot events so far, by (kind, reason); reason is empty but for stops and kills.
        runtime: exited pilots that ran, and the seconds they ran in all.
        loops: loops so far.
        api_calls: engine API calls so far.
        senders: each InfluxDB target's counters, by its URL (password masked).
        ledger: what the node lent over every day its ledger keeps (None: not known).
        host: this host's name.
        version: Plancton's version.
    """

    instance: str = "plancton"
    report: LoopReport | None = None
    events: Mapping[tuple[str, str], int] = field(default_factory=dict)
    runtime: tuple[int, float] = (0, 0.0)
    loops: int = 0
    api_calls: int = 0
    senders: Mapping[str, SenderStats] = field(default_factory=dict)
    ledger: Day | None = None
    version: str = __version__
    host: str = field(default_factory=socket.gethostname)


def initial_events() -> Counter[tuple[str, str]]:
    """Return the event counters at start: every kind and known reason at 0."""
    counts: Counter[tuple[str, str]] = Counter()
    for kind in EVENT_COUNTERS:
        for reason in KNOWN_REASONS.get(kind, ("",)):
            counts[(kind, reason)] = 0
    return counts


def event_key(event: PilotEvent) -> tuple[str, str]:
    """Given a pilot event, return the counter it adds to: its kind, and its reason when it
    is a stop or a kill (other reasons are free text, no label)."""
    return event.kind, event.reason if event.kind in REASON_TAG_KINDS else ""


# -- the mapping ----------------------------------------------------------------------------


def families(snapshot: Snapshot) -> list[Metric]:
    """Given a snapshot, return its metric families (host figures only when sampled)."""
    found = [
        *_daemon_families(snapshot),
        *_event_families(snapshot),
        *_sender_families(snapshot),
        *_ledger_families(snapshot),
    ]
    report = snapshot.report
    if report is not None and report.sample is not None:
        found += _host_families(snapshot.instance, report)
    return found


_Family = TypeVar("_Family", GaugeMetricFamily, CounterMetricFamily)


def _gauge(name: str, documentation: str, instance: str, value: float) -> GaugeMetricFamily:
    return _single(GaugeMetricFamily, name, documentation, instance, value)


def _counter(name: str, documentation: str, instance: str, value: float) -> CounterMetricFamily:
    return _single(CounterMetricFamily, name, documentation, instance, value)


def _single(family_type: type[_Family], name: str, documentation: str, instance: str, value: float) -> _Family:
    family = family_type(name, documentation, labels=[INSTANCE_LABEL])
    family.add_metric([instance], value)
    return family


def _labelled(
    family_type: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    documentation: str,
    instance: str,
    label: str,
    values: Iterable[tuple[str, float]],
) -> GaugeMetricFamily | CounterMetricFamily:
    family = family_type(name, documentation, labels=[INSTANCE_LABEL, label])
    for label_value, value in values:
        family.add_metric([instance, label_value], value)
    return family


def _ledger_families(snapshot: Snapshot) -> Iterator[Metric]:
    """The ledger's totals, as counters that go on counting across restarts of the daemon."""
    instance, lent = snapshot.instance, snapshot.ledger
    if lent is None:
        return
    kept = "kept across restarts"
    yield _counter("plancton_lent_cpu_seconds", f"CPU seconds the pilots used, {kept}", instance, lent.cpu_seconds)
    yield _counter("plancton_lent_seconds", f"Seconds pilots ran on this host, {kept}", instance, lent.lent_seconds)
    partly = f"Seconds pilots ran under lend_cores beside a present or busy owner, {kept}"
    yield _counter("plancton_partly_lent_seconds", partly, instance, lent.partly_lent_seconds)
    yield _counter("plancton_lent_pilots_started", f"Pilots started, {kept}", instance, lent.started)
    endings = [(name.value, float(lent.ended.get(name.value, 0))) for name in Ending]
    documentation = f"Pilots ended, by how, {kept}"
    yield _labelled(CounterMetricFamily, "plancton_lent_pilot_endings", documentation, instance, "ending", endings)
    reasons = [(name.value, lent.given_way_seconds.get(name.value, 0.0)) for name in GiveWay]
    documentation = f"Seconds pilots gave way to the host's owner, by why, {kept}"
    yield _labelled(CounterMetricFamily, "plancton_given_way_seconds", documentation, instance, "reason", reasons)


def _daemon_families(snapshot: Snapshot) -> Iterator[Metric]:
    instance, report = snapshot.instance, snapshot.report
    build = InfoMetricFamily("plancton_build", "Plancton's version", labels=[INSTANCE_LABEL])
    build.add_metric([instance], {"version": snapshot.version})
    yield build
    yield _counter("plancton_loops", "Loops run (sense, decide, act, report)", instance, snapshot.loops)
    yield _counter("plancton_engine_api_calls", "Container engine API calls made", instance, snapshot.api_calls)
    if report is None:
        return
    yield _gauge("plancton_uptime_seconds", "Seconds since the daemon started", instance, report.uptime_seconds)
    modes = [(mode, float(mode == report.mode)) for mode in MODES]
    yield _labelled(
        GaugeMetricFamily, "plancton_mode", "1 for the daemon's mode, 0 for the others", instance, "mode", modes
    )
    states = dict.fromkeys(COUNTED_STATES, 0) | report.pilots_by_state
    yield _labelled(
        GaugeMetricFamily, "plancton_pilots", "Pilots by container state", instance, "state", sorted(states.items())
    )
    yield _labelled(
        GaugeMetricFamily,
        "plancton_hold_reason",
        "1 for each reason that keeps pilots from starting or holds, stops or kills running ones",
        instance,
        "reason",
        [(hold.value, float(hold in report.holds)) for hold in Hold],
    )
    config = InfoMetricFamily("plancton_config", "The configuration in force", labels=[INSTANCE_LABEL])
    config.add_metric([instance], {"revision": report.config_revision})
    yield config
    failures = [(outcome.value, float(outcome.value == report.config_update_failure)) for outcome in FAILURES]
    yield _labelled(
        GaugeMetricFamily,
        "plancton_config_update_failed",
        "1 for how the last plancton-bootstrap --update failed (the node keeps its configuration), 0 for the others",
        instance,
        "reason",
        failures,
    )
    if report.config_update_checked_at is not None:
        yield _gauge(
            "plancton_config_update_timestamp_seconds",
            "When plancton-bootstrap --update last ran (Unix seconds)",
            instance,
            report.config_update_checked_at,
        )
    if report.drain_by is not None:
        yield _gauge(
            "plancton_drain_deadline_timestamp_seconds",
            "The drain deadline in force (Unix seconds): pilots left then are stopped",
            instance,
            report.drain_by,
        )
    yield _gauge("plancton_loop_duration_seconds", "How long the last loop took", instance, report.loop_seconds)
    engine = "1 when the container engine answered in the last loop"
    yield _gauge("plancton_engine_up", engine, instance, float(report.engine_available))
    node = InfoMetricFamily("plancton_node", "The host and the container engine", labels=[INSTANCE_LABEL])
    node.add_metric([instance], {"host": snapshot.host, "engine": report.engine})
    yield node
    rejected = "1 while the configuration file on disk is refused and the daemon keeps its last good one"
    yield _gauge("plancton_config_rejected", rejected, instance, float(report.config_rejected))
    if report.image_ready is not None:
        ready = "1 when the pilots' image was there when last looked for, 0 when it is missing"
        yield _gauge("plancton_image_ready", ready, instance, float(report.image_ready))


def _event_families(snapshot: Snapshot) -> Iterator[Metric]:
    instance = snapshot.instance
    for kind, (name, documentation) in EVENT_COUNTERS.items():
        counts = sorted((reason, count) for (of_kind, reason), count in snapshot.events.items() if of_kind == kind)
        if kind in REASON_TAG_KINDS:
            yield _labelled(CounterMetricFamily, name, documentation, instance, "reason", counts)
        else:
            family = CounterMetricFamily(name, documentation, labels=[INSTANCE_LABEL])
            family.add_metric([instance], sum(count for _, count in counts))
            yield family
    runtime = SummaryMetricFamily(
        "plancton_pilot_runtime_seconds", "How long the exited pilots ran", labels=[INSTANCE_LABEL]
    )
    runtime.add_metric([instance], count_value=snapshot.runtime[0], sum_value=snapshot.runtime[1])
    yield runtime


#: The InfluxDB senders' counters: (metric name, family type, help, SenderStats attribute).
_SENDER_METRICS: tuple[tuple[str, type[GaugeMetricFamily] | type[CounterMetricFamily], str, str], ...] = (
    ("plancton_influxdb_points_sent", CounterMetricFamily, "Points written to each InfluxDB target", "sent"),
    (
        "plancton_influxdb_points_dropped",
        CounterMetricFamily,
        "Points dropped for each InfluxDB target: the oldest of a full buffer, and any refused",
        "dropped",
    ),
    (
        "plancton_influxdb_points_buffered",
        GaugeMetricFamily,
        "Points waiting to be sent to each InfluxDB target",
        "buffered",
    ),
)


def _sender_families(snapshot: Snapshot) -> Iterator[Metric]:
    senders = sorted(snapshot.senders.items())
    for name, family_type, documentation, attribute in _SENDER_METRICS:
        values = [(url, float(getattr(stats, attribute))) for url, stats in senders]
        yield _labelled(family_type, name, documentation, snapshot.instance, "target", values)


def _host_families(instance: str, report: LoopReport) -> Iterator[Metric]:
    sample = report.sample
    assert sample is not None
    yield _gauge("plancton_host_cpus", "CPUs of the host", instance, sample.ncpus)
    cores = "CPU cores busy over the last half second before the last loop"
    yield _gauge("plancton_host_busy_cpu_cores", f"{cores}, on the whole host", instance, sample.busy_cores)
    yield _gauge("plancton_owner_cpu_cores", f"{cores}, for anything but the pilots", instance, sample.owner_cores)
    yield _gauge("plancton_pilots_cpu_cores", f"{cores}, for the pilots", instance, sample.pilots_cores)
    memory = "Memory available to new processes without swapping"
    yield _gauge("plancton_memory_available_bytes", memory, instance, sample.available_bytes)
    for name, documentation, pressure in (
        ("plancton_cpu_pressure_ratio", "CPU pressure, some avg10, as a ratio", sample.cpu_pressure),
        ("plancton_memory_pressure_ratio", "Memory pressure, full avg10, as a ratio", sample.memory_pressure),
    ):
        if pressure is not None and math.isfinite(pressure):
            yield _gauge(name, documentation, instance, pressure / 100.0)


# -- serving and writing --------------------------------------------------------------------


class SnapshotCollector(Collector):
    """Answers each scrape from the snapshot in place, which the loop replaces whole."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterable[Metric]:
        """Return the metric families of the snapshot in place."""
        return families(self.snapshot)


#: What to do about a listen address that cannot be used, by errno.
_LISTEN_FIXES = {
    errno.EADDRINUSE: "another process listens there (ss -ltnp names it): choose another port in metrics_listen",
    errno.EADDRNOTAVAIL: "no interface of this host has that address: write one of its addresses, or 0.0.0.0",
    errno.EACCES: "ports below 1024 need privileges: choose a port above 1023 in metrics_listen",
}


class _QuietHandler(WSGIRequestHandler):
    """Answers requests without writing a line to stderr for each."""

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing."""


class Endpoint:
    """The HTTP endpoint: ``/metrics`` through prometheus_client's own application and, given
    the installation's folders, the owner's page at ``/``; one thread serves both.

    Args:
        address: where to listen.
        registry: what to serve at ``/metrics``.
        paths: the folders whose state, snooze, ledger and history the page shows; without
            them only the metrics are served, at any path, as prometheus_client serves them.

    Raises:
        OSError: the address cannot be listened on.
    """

    def __init__(self, address: ListenAddress, registry: CollectorRegistry, paths: Paths | None = None) -> None:
        self.address = address
        metrics = make_wsgi_app(registry)
        app = owner_page_app(paths, metrics, address) if paths is not None else metrics
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        server_class = type("EndpointServer", (ThreadingWSGIServer,), {"address_family": family})
        self.server: WSGIServer = make_server(address.host, address.port, app, server_class, _QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-endpoint", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and free the address."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(CLOSE_SECONDS)


def listen_problem(address: ListenAddress, error: OSError) -> str:
    """Given an address that could not be listened on and why, return the line to log."""
    fix = _LISTEN_FIXES.get(error.errno or 0, "check metrics_listen")
    return (
        f"metrics_listen {address}: cannot listen: {error.strerror or error}; {fix}. Plancton runs on "
        f"without the endpoint and tries again every {LISTEN_RETRY_SECONDS:.0f} s and when the configuration changes"
    )


class PrometheusReporter:
    """The daemon's Prometheus reporter: counts pilot events, keeps the last loop's report,
    and serves them at ``metrics_listen`` and writes them to ``metrics_textfile``. With
    neither set it only counts. Never blocks on a scrape and never raises.

    Args:
        influx_senders: returns each InfluxDB target's counters, by URL (password masked).
        ledger: returns the ledger's totals over every day it keeps (None: no ledger).
        clock: a monotonic clock, for the retries and the textfile's pace.
        paths: the installation's folders, for the owner's page at ``/`` of the endpoint
            (without them, the endpoint serves only the metrics).
    """

    def __init__(
        self,
        influx_senders: Callable[[], Mapping[str, SenderStats]] = dict,
        ledger: Callable[[], Day] | None = None,
        clock: Callable[[], float] = time.monotonic,
        paths: Paths | None = None,
    ) -> None:
        self.influx_senders = influx_senders
        self.ledger = ledger
        self.clock = clock
        self.paths = paths
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SnapshotCollector()
        self.registry.register(self.collector)
        self.endpoint: Endpoint | None = None
        self.listen: ListenAddress | None = None
        self.textfile: str | None = None
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._events = initial_events()
        self._listen_failure: str | None = None
        self._listen_tried = -math.inf
        self._textfile_failure: str | None = None
        self._textfile_written = -math.inf

    def configure(self, config: Config) -> None:
        """Serve and write where the configuration says from now on."""
        self._guard(self._configure, config)

    def loop(self, report: LoopReport) -> None:
        """Take the figures of one loop; serve them, and write them to the textfile when due."""
        self._guard(self._loop, report)

    def pilot_event(self, event: PilotEvent) -> None:
        """Count one pilot event (called from the executor's threads too)."""
        self._guard(self._pilot_event, event)

    def close(self) -> None:
        """Write the textfile a last time, with the mode ``stopping``, and stop the endpoint."""
        self._guard(self._close)

    # -- what each does ----------------------------------------------------------------------

    def _configure(self, config: Config) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, instance=config.instance)
        wanted = parse_listen_address(config.metrics_listen) if config.metrics_listen else None
        if wanted != self.listen:
            self._stop_endpoint()
            self.listen = wanted
        self._listen_tried = -math.inf  # a new configuration is a new chance for a taken address
        if config.metrics_textfile != self.textfile:
            self._remove_textfile()
            self.textfile = config.metrics_textfile
            self._textfile_written = -math.inf
        self._publish()
        self._serve_if_due()

    def _loop(self, report: LoopReport) -> None:
        with self._lock:
            self._snapshot = replace(
                self._snapshot,
                report=report,
                loops=self._snapshot.loops + 1,
                api_calls=self._snapshot.api_calls + report.api_calls,
            )
        self._publish()
        self._serve_if_due()
        if self.clock() - self._textfile_written >= TEXTFILE_MIN_SECONDS:
            self._write_textfile()

    def _pilot_event(self, event: PilotEvent) -> None:
        with self._lock:
            self._events[event_key(event)] += 1
            runtime = self._snapshot.runtime
            if event.kind == "exited" and event.runtime_seconds is not None:
                runtime = (runtime[0] + 1, runtime[1] + max(0.0, event.runtime_seconds))
            self._snapshot = replace(self._snapshot, runtime=runtime)
        self._publish()

    def _close(self) -> None:
        with self._lock:
            report = self._snapshot.report
            if report is not None:
                self._snapshot = replace(self._snapshot, report=replace(report, mode=STOPPING_MODE))
        self._publish()
        self._write_textfile()
        self._stop_endpoint()

    def _publish(self) -> None:
        """Swap a new snapshot in for the scrapes (only while something reads it)."""
        if self.listen is None and self.textfile is None:
            return
        senders = dict(self.influx_senders())
        lent = self.ledger() if self.ledger is not None else None
        with self._lock:
            self._snapshot = replace(self._snapshot, events=dict(self._events), senders=senders, ledger=lent)
            self.collector.snapshot = self._snapshot

    # -- the endpoint ------------------------------------------------------------------------

    def _serve_if_due(self) -> None:
        """Listen at the wanted address unless already there or tried too recently."""
        address = self.listen
        if address is None or self.endpoint is not None:
            return
        if self.clock() - self._listen_tried < LISTEN_RETRY_SECONDS:
            return
        self._listen_tried = self.clock()
        try:
            self.endpoint = Endpoint(address, self.registry, self.paths)
        except OSError as error:
            problem = listen_problem(address, error)
            if problem != self._listen_failure:
                log.error("%s", problem)
            self._listen_failure = problem
            return
        self._listen_failure = None
        log.info("Prometheus metrics at http://%s/metrics", address)
        if self.paths is not None:
            log.info("the owner's page at http://%s/", address)
        if not address.loopback:
            log.warning("metrics_listen %s: the metrics are open to the network, without authentication", address)

    def _stop_endpoint(self) -> None:
        if self.endpoint is not None:
            endpoint, self.endpoint = self.endpoint, None
            endpoint.close()
            log.info("Prometheus metrics no longer served at %s", endpoint.address)
        self._listen_failure = None

    # -- the textfile ------------------------------------------------------------------------

    def _write_textfile(self) -> None:
        """Replace the textfile at once (a temporary file in its folder, renamed over it)."""
        path = self.textfile
        if path is None:
            return
        self._textfile_written = self.clock()
        try:
            write_to_textfile(path, self.registry)
        except OSError as error:
            problem = f"metrics_textfile {path}: cannot write it: {error.strerror or error}"
            if problem != self._textfile_failure:
                log.error("%s; check that its folder exists and that this user may write there", problem)
            self._textfile_failure = problem
            return
        if self._textfile_failure is not None:
            log.info("metrics_textfile %s: written again", path)
        self._textfile_failure = None

    def _remove_textfile(self) -> None:
        """Remove the textfile of a previous configuration, so that it does not go stale."""
        if self.textfile is not None and self._textfile_written > -math.inf:
            try:
                os.remove(self.textfile)
            except FileNotFoundError:
                pass
            except OSError as error:
                log.warning("metrics_textfile %s: cannot remove it: %s", self.textfile, error.strerror)
        self._textfile_failure = None

    @staticmethod
    def _guard(action: Callable[..., None], *args: object) -> None:
        """Run an action, logging instead of raising: reporting must never stop the daemon."""
        try:
            action(*args)
        except Exception:
            log.exception("Prometheus metrics: a report could not be taken")
