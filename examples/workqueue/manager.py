#!/usr/bin/python3
"""A small Work Queue manager for trying Plancton's Work Queue pilots: it submits tasks whose
output can be checked, and reports what happens as JSON lines on stdout.

Each task receives a random payload and runs, on whichever worker takes it::

    sleep SECONDS; sha256sum payload > digests; head -c MIB_M /dev/zero | sha256sum >> digests

so it waits (``--sleep``), burns CPU (``--hash-mib``) or both. The manager checks every
returned digest against its own computation. A task lost with its worker (a pilot stopped by
Plancton) is sent again by Work Queue; the manager reports each task once, when it completes.

Runs with Debian's interpreter and bindings (package ``python3-workqueue``)::

    /usr/bin/python3 examples/workqueue/manager.py --port 9123 --tasks 50 --sleep 5

Lines on stdout, one JSON object each, all with ``event`` and ``time`` (seconds since the
epoch):

- ``listening``: ``port`` the manager listens on (workers connect there);
- ``state``: ``workers`` connected, tasks ``running``, ``waiting`` and ``done``; written when
  one of them changes;
- ``done``: a task completed: ``tag``, ``ok`` (exit 0 and the right digests), ``attempts``
  (dispatches, more than 1 when a worker was lost), ``dispatched`` (when the final attempt
  was sent to its worker), the worker that ran it (``worker``: the host name the worker
  reported; ``address``: its address and port as the manager saw its connection) and, when
  not ``ok``, the start of the ``output`` it returned;
- ``summary``: ``tasks``, ``completed``, ``correct``, ``workers_joined``, ``workers_lost``,
  ``workers_idled_out``, ``seconds`` (first dispatch to last result), ``wall_seconds``
  (manager start to last result) and ``tasks_per_minute`` (over ``seconds``).

Exit status: 0 when every task completed with the right output, 1 otherwise (or on
``--timeout``), 2 on a usage error.
"""

import argparse
import hashlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

import work_queue  # type: ignore[import-not-found]

MIB = 1024 * 1024
PAYLOAD_BYTES = 4096
#: Longest wait for a result; the ``state`` events are at most this late.
WAIT_SECONDS = 1


@dataclass(frozen=True)
class Expected:
    """What one task must return: its tag and the digests it must write."""

    tag: str
    digests: str
    output_path: str


def emit(stream: TextIO, event: str, **fields: Any) -> None:
    """Write one event as a JSON line and flush it, so that readers see it at once."""
    stream.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
    stream.flush()


def zero_digest(mebibytes: int) -> str:
    """Given a size in MiB, return the SHA-256 hex digest of that many zero bytes."""
    digest = hashlib.sha256()
    block = bytes(MIB)
    for _ in range(mebibytes):
        digest.update(block)
    return digest.hexdigest()


def task_command(sleep_seconds: float, hash_mib: int) -> str:
    """Return the shell command of one task (run by ``/bin/sh`` on the worker)."""
    steps = []
    if sleep_seconds > 0:
        steps.append(f"sleep {sleep_seconds:g}")
    steps.append("sha256sum payload > digests")
    if hash_mib > 0:
        steps.append(f"head -c {hash_mib * MIB} /dev/zero | sha256sum >> digests")
    return " && ".join(steps)


def expected_digests(payload: str, zeros: str | None) -> str:
    """Given a payload and the digest of the zero stream (or None), return the file expected."""
    text = f"{hashlib.sha256(payload.encode()).hexdigest()}  payload\n"
    return text + (f"{zeros}  -\n" if zeros else "")


def submit_tasks(queue: Any, args: argparse.Namespace, workdir: str) -> dict[int, Expected]:
    """Submit ``args.tasks`` tasks; return what each must produce, by task id."""
    zeros = zero_digest(args.hash_mib) if args.hash_mib > 0 else None
    command = task_command(args.sleep, args.hash_mib)
    expected = {}
    for index in range(args.tasks):
        tag = f"task-{index:04d}"
        payload = f"{tag} {secrets.token_hex(PAYLOAD_BYTES // 2 - 8)}\n"
        output_path = os.path.join(workdir, f"{tag}.digests")
        task = work_queue.Task(command)
        task.specify_tag(tag)
        task.specify_buffer(payload, "payload", cache=False)
        task.specify_output_file(output_path, "digests", cache=False)
        task.specify_cores(args.cores)
        expected[queue.submit(task)] = Expected(tag, expected_digests(payload, zeros), output_path)
    return expected


def read_text(path: str) -> str:
    """Return a file's text, or "" when it is missing."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def check(task: Any, expected: Expected) -> bool:
    """Return whether a completed task succeeded and wrote exactly the expected digests."""
    succeeded = task.result == work_queue.WORK_QUEUE_RESULT_SUCCESS and task.return_status == 0
    return succeeded and read_text(expected.output_path) == expected.digests


def state_of(queue: Any, done: int) -> dict[str, int]:
    """Return the figures of a ``state`` event."""
    stats = queue.stats
    return {
        "workers": stats.workers_connected,
        "running": stats.tasks_running,
        "waiting": stats.tasks_waiting,
        "done": done,
    }


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the manager until every task is done (or the timeout); return the exit status."""
    stop = {"signal": 0}

    def on_signal(number: int, frame: FrameType | None) -> None:
        stop["signal"] = number

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    queue = work_queue.WorkQueue(port=args.port, debug_log=args.debug_log)
    started = time.time()
    emit(out, "listening", port=queue.port)
    with tempfile.TemporaryDirectory(prefix="plancton-wq-manager-") as workdir:
        expected = submit_tasks(queue, args, workdir)
        correct, completed, first_dispatch, last_result = 0, 0, None, None
        deadline = time.monotonic() + args.timeout
        last_state: dict[str, int] = {}
        while completed < len(expected) and not stop["signal"] and time.monotonic() < deadline:
            task = queue.wait(WAIT_SECONDS)
            if task is not None:
                completed += 1
                ok = check(task, expected[task.id])
                correct += ok
                dispatched = task._task.time_when_commit_start / 1e6
                first_dispatch = min(first_dispatch or dispatched, dispatched)
                last_result = time.time()
                emit(
                    out,
                    "done",
                    tag=expected[task.id].tag,
                    ok=ok,
                    attempts=task._task.try_count,
                    dispatched=dispatched,
                    worker=task.hostname,
                    address=task.host,
                    output=read_text(expected[task.id].output_path)[:200] if not ok else "",
                )
            state = state_of(queue, completed)
            if state != last_state:
                emit(out, "state", **state)
                last_state = state
        linger_until = time.monotonic() + args.linger
        while not stop["signal"] and time.monotonic() < linger_until:
            queue.wait(WAIT_SECONDS)
            state = state_of(queue, completed)
            if state != last_state:
                emit(out, "state", **state)
                last_state = state
        stats = queue.stats
        seconds = (last_result - first_dispatch) if first_dispatch and last_result else 0.0
        wall_seconds = (last_result - started) if last_result else 0.0
        emit(
            out,
            "summary",
            tasks=len(expected),
            completed=completed,
            correct=correct,
            workers_joined=stats.total_workers_joined,
            workers_lost=stats.total_workers_lost,
            workers_idled_out=stats.total_workers_idled_out,
            seconds=seconds,
            wall_seconds=wall_seconds,
            tasks_per_minute=60.0 * completed / seconds if seconds > 0 else 0.0,
        )
    return 0 if correct == len(expected) else 1


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the command line."""
    parser = argparse.ArgumentParser(description="Submit checkable tasks to Work Queue workers; report as JSON.")
    parser.add_argument("--port", type=int, default=work_queue.WORK_QUEUE_DEFAULT_PORT, help="0: any free port")
    parser.add_argument("--tasks", type=int, default=20, help="how many tasks (default 20)")
    parser.add_argument("--sleep", type=float, default=5.0, help="seconds each task sleeps (default 5)")
    parser.add_argument("--hash-mib", type=int, default=0, help="MiB of zeros each task hashes (CPU work)")
    parser.add_argument("--cores", type=int, default=1, help="cores each task asks for (default 1)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--linger", type=float, default=0.0, help="keep listening this long after the last task")
    parser.add_argument("--debug-log", help="write Work Queue's own debug log (workers connecting, leaving) here")
    return parser


def main(argv: list[str]) -> int:
    """Run the manager with the given arguments; return the exit status."""
    args = build_parser().parse_args(argv)
    if args.tasks < 1 or args.sleep < 0 or args.hash_mib < 0 or args.cores < 1:
        print("manager.py: --tasks and --cores must be at least 1, --sleep and --hash-mib at least 0", file=sys.stderr)
        return 2
    return run(args, sys.stdout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
