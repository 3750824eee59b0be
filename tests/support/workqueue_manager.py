"""Real cctools Work Queue for the tests and benchmarks: the example manager, the example
pilot image and host workers, each started and stopped by its pid.

The manager is ``examples/workqueue/manager.py``, run by Debian's interpreter because the
Work Queue bindings (package ``python3-workqueue``) live in its dist-packages, outside the
test virtualenv. It reports what happens as JSON lines, read here from its output file.
"""

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support import services

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPOSITORY, "examples", "workqueue")
MANAGER = os.path.join(EXAMPLE, "manager.py")
BUILD_IMAGE = os.path.join(EXAMPLE, "build-image")
SYSTEM_PYTHON = "/usr/bin/python3"
WORKER = "work_queue_worker"
#: Live container states: a pilot in one of these holds (or may soon hold) a worker.
LIVE_STATES = frozenset({"created", "running", "paused", "restarting"})


def bindings_problem() -> str | None:
    """Return why the example manager cannot run here, or None when it can."""
    try:
        found = subprocess.run([SYSTEM_PYTHON, "-c", "import work_queue"], check=False, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{SYSTEM_PYTHON} cannot run: {error}"
    if found.returncode != 0:
        return "the Work Queue Python bindings are missing: apt-get install python3-workqueue"
    return None


def build_image(reference: str, self_contained: bool = False) -> None:
    """Build the example pilot image with the example's own build-image script.

    Raises:
        subprocess.CalledProcessError: the script failed (its output is in the error).
    """
    options = ["--self-contained"] if self_contained else []
    subprocess.run([BUILD_IMAGE, *options, reference], check=True, capture_output=True, text=True, timeout=300)


@dataclass
class Manager:
    """A running example manager and the events it has written so far."""

    process: subprocess.Popen[bytes]
    events_path: str
    debug_path: str | None = None

    @classmethod
    def start(
        cls,
        folder: str,
        tasks: int,
        sleep: float,
        hash_mib: int = 0,
        linger: float = 0.0,
        debug: bool = False,
        wrapper: Sequence[str] = (),
    ) -> "Manager":
        """Start a manager on a free port that submits ``tasks`` tasks; its events go to a file
        in ``folder``, and so does Work Queue's own debug log if ``debug``. A ``wrapper``
        command, such as ``nsenter`` into a network namespace, runs it by exec (the manager
        keeps its pid)."""
        events_path = os.path.join(folder, f"manager-{time.monotonic_ns()}.jsonl")
        debug_path = events_path.replace(".jsonl", ".debug") if debug else None
        command = [*wrapper, SYSTEM_PYTHON, MANAGER, "--port", "0", "--tasks", str(tasks), "--sleep", str(sleep)]
        command += ["--hash-mib", str(hash_mib), "--linger", str(linger), "--timeout", "900"]
        command += ["--debug-log", debug_path] if debug_path else []
        with open(events_path, "wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=folder)
        return cls(process, events_path, debug_path)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Return the events written so far (of one kind, or all); a partial last line waits."""
        try:
            with open(self.events_path, encoding="utf-8") as handle:
                lines = handle.read().split("\n")[:-1]
        except FileNotFoundError:
            return []
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except ValueError:
                continue  # anything else on the manager's output (a warning) is not an event
        return [event for event in parsed if kind is None or event["event"] == kind]

    def output(self) -> str:
        """Return the end of what the manager wrote, then the end of Work Queue's debug log if
        it keeps one, for failure messages."""
        with open(self.events_path, encoding="utf-8", errors="replace") as handle:
            written = handle.read()[-3000:]
        if self.debug_path is None:
            return written
        try:
            with open(self.debug_path, encoding="utf-8", errors="replace") as handle:
                debug = handle.read()[-4000:]
        except FileNotFoundError:
            debug = "(none written)"
        return f"{written}\nWork Queue's debug log, its end:\n{debug}"

    def port(self) -> int | None:
        """Return the port the manager listens on, once it said so."""
        listening = self.events("listening")
        return int(listening[0]["port"]) if listening else None

    def done(self) -> list[dict[str, Any]]:
        """Return the ``done`` events: one per completed task."""
        return self.events("done")

    def latest_state(self) -> dict[str, Any]:
        """Return the latest ``state`` event (empty before the first)."""
        states = self.events("state")
        return states[-1] if states else {}

    def summary(self) -> dict[str, Any] | None:
        """Return the ``summary`` event, once the manager wrote it."""
        summaries = self.events("summary")
        return summaries[0] if summaries else None

    def exit_status(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the manager to end; return its exit status, or
        None if it still runs."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Stop the manager by its pid (SIGTERM, SIGKILL if it lingers)."""
        services.StartedProcess(self.process, self.events_path).stop(timeout=20)


def worker_command(
    example: list[str], port: int, idle_timeout: float, debug: bool = False, host: str | None = None
) -> list[str]:
    """Given the example's docker_cmd, return it with another manager port and idle timeout,
    with another manager host if ``host`` is given and, if ``debug``, with the worker's own log
    of its talk with the manager on its output."""
    command = [f"--timeout={idle_timeout:g}" if item.startswith("--timeout=") else item for item in example]
    return [*command[:-2], *(["--debug=wq"] if debug else []), host or command[-2], str(port)]


@dataclass
class HostWorkers:
    """Work Queue workers started directly on the host (the baseline without Plancton)."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, count: int, port: int, cores: int, idle_timeout: float, niceness: int = 0) -> None:
        """Start ``count`` workers for the manager on 127.0.0.1:``port``, at a niceness."""
        command = ["nice", "-n", str(niceness), WORKER, f"--cores={cores}", f"--timeout={idle_timeout:g}"]
        command += ["127.0.0.1", str(port)]
        for _ in range(count):
            self.processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
            )

    def stop(self) -> None:
        """Stop every worker by its pid."""
        for process in self.processes:
            services.StartedProcess(process, os.devnull).stop(timeout=20)
        self.processes.clear()
