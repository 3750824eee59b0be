"""A soak run of the daemon (not part of the test command): pilots of random lifetimes, a
random owner load, a reload every minute and a Docker Engine restart every ten minutes
(through systemd where the engine is its docker.service); with --presence, a person too, who
comes to the keyboard and leaves again as the host's systemd-logind tells.

Run as root on a machine whose Docker Engine the run may restart::

    /opt/plancton-test/venv/bin/python -m tests.soak --minutes 30

from the checkout, after ./tests/run has made the test environment (``--show FILE...`` prints
the figures of runs written with --output as one Markdown table, a column a run). ``tests/vm/run --soak
MINUTES`` runs it with --presence in the VM tier's guest (systemd, cgroup v2, Docker's
systemd cgroup driver).

It prints (and writes with --output) the run's start, commit and kernel, then pilots
started, exits handled, kills, the daemon's RSS and open file descriptors at start and end,
and the orphan containers left, and exits 1 when
RSS grew by more than 10%, descriptors grew, or any container was orphaned. Descriptors are
read every second: requests in flight come and go, so growth is judged by the fewest open in
the last third of the run against the fewest in the first third, leaving out two minutes
after each engine restart and each time the daemon found the engine not answering (it then
drops its connections). Files and pipes are judged so in every run; the engine
connections (Unix sockets) only in runs of at least ten minutes: the Docker SDK keeps up to
25 connection pools, which fill as pilots come and go, and a shorter run would read their
filling as growth.
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psutil

from bench.results import source_of
from tests.support import services
from tests.vm.guest.logind_session import LoginSession

INSTANCE = "soak"
#: The checkout the soak runs from, whose commit its figures name.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The user whose login session is the person of --presence (created and removed by the run).
PERSON = "plancton-soak"
#: With --presence: seconds without input before the daemon counts the person gone.
INPUT_IDLE_SECONDS = 5
#: After an engine restart, the seconds left out of the descriptor floors.
SETTLE_SECONDS = 120.0
#: The shortest run whose engine connections are judged: by then the SDK's pools have filled.
SOCKETS_JUDGED_FROM_MINUTES = 10.0
#: What the daemon logs when the engine does not answer (a restart, or a request that timed
#: out on a stalled engine): it then drops its connections to it, as at a restart.
ENGINE_LOST = "does not answer as an engine"
BURN = [sys.executable, "-c", "while True: pass"]
CONFIG = """instance: soak
main_sleep: 1
max_docks: {max_docks}
docks_per_loop: 4
cpus_per_dock: 0.5
max_dock_mem: 64M
grace_spawn: 10
pause_delay: 3
grace_kill: 20
vacate_time: 2
docker_cmd: ["sh", "-c", "sleep $(( RANDOM % 20 + 1 ))"]
"""


def ctl(folder: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run planctonctl on the soak's folders."""
    command = [*services.PLANCTONCTL, "--confdir", folder, "--rundir", folder]
    command += ["--logdir", folder, "--statedir", folder]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=False)


def daemon_figures(folder: str) -> dict[str, float]:
    """Return the daemon's resident memory (MB), open file descriptors, and how many of those
    are Unix sockets (its connections to the engine)."""
    with open(os.path.join(folder, "plancton.pid"), encoding="ascii") as handle:
        process = psutil.Process(int(handle.read()))
    return {
        "rss_mb": process.memory_info().rss / 2**20,
        "fds": process.num_fds(),
        "sockets": len(process.net_connections(kind="unix")),
    }


def descriptor_floors(samples: list[tuple[float, int]], restarts: list[float], seconds: float) -> tuple[int, int]:
    """Return the fewest descriptors open in the first and in the last third of the run.

    Requests in flight add descriptors for a moment; what a leak adds stays. The floor of each
    third is what the daemon holds for good, so a leak shows as a higher floor at the end. An
    engine restart closes every connection, and so does the daemon when the engine does not
    answer, so the minutes after either (``restarts``) are left out: they would lower a floor
    and hide a leak, or, in the first third, make an ordinary floor later look like growth.
    """

    settle = min(SETTLE_SECONDS, seconds / 8)  # short runs restart more often

    def settled(moment: float) -> bool:
        return not any(0 <= moment - restart < settle for restart in restarts)

    first = [count for moment, count in samples if moment < seconds / 3 and settled(moment)]
    last = [count for moment, count in samples if moment >= 2 * seconds / 3 and settled(moment)]
    return min(first), min(last)


def engine_losses(log: str, began_wall: float) -> list[float]:
    """Given the daemon's log and the wall-clock time the run began, return the seconds into
    the run at which the daemon said that the engine did not answer."""
    moments = []
    for line in log.splitlines():
        if ENGINE_LOST in line:
            try:
                logged = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            if logged >= began_wall:
                moments.append(logged - began_wall)
    return moments


def our_containers() -> list[dict[str, Any]]:
    with services.engine_client() as client:
        return services.instance_containers(client, INSTANCE)


def engine_unit_active() -> bool:
    """Return whether the Docker Engine runs as systemd's docker.service here."""
    if not os.path.isdir("/run/systemd/system"):
        return False
    done = subprocess.run(["systemctl", "is-active", "--quiet", "docker.service"], check=False)
    return done.returncode == 0


def restart_engine(log_dir: str, through_systemd: bool) -> services.StartedProcess | None:
    """Restart the Docker Engine: through systemd, or by stopping every dockerd and starting
    a new one, which is returned."""
    if through_systemd:
        subprocess.run(["systemctl", "restart", "docker.service"], check=True, capture_output=True, timeout=300)
        services.wait_for_docker()
        return None
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "dockerd":
            process.terminate()
            process.wait(120)
    return services.start_dockerd(log_dir)


class Person:
    """A person at the keyboard as the host's systemd-logind tells: a graphical session of a
    user made for the run, whose idle hint flips at random, as a desktop's idle monitor would
    set it."""

    def __init__(self) -> None:
        subprocess.run(["useradd", "--create-home", "--user-group", PERSON], check=True, capture_output=True)
        self.session: LoginSession | None = None
        try:
            self.session = LoginSession(pwd.getpwnam(PERSON).pw_uid)
        except BaseException:
            self.remove()
            raise
        self.present = True  # a new session is in use
        self.changes = 0

    def flip(self) -> None:
        """The person leaves, or comes back."""
        assert self.session is not None
        self.present = not self.present
        self.session.set_idle(not self.present)
        self.changes += 1

    def remove(self) -> None:
        """Log out and remove the user with its processes and home."""
        if self.session is not None:
            self.session.close()
        subprocess.run(["loginctl", "terminate-user", PERSON], check=False, capture_output=True)
        deadline = time.monotonic() + 60
        # userdel refuses (8) while the user's service manager is still going away
        while subprocess.run(["userdel", "--remove", PERSON], check=False, capture_output=True).returncode == 8:
            if time.monotonic() > deadline:
                break
            time.sleep(1)


def soak(minutes: float, seed: int, presence: bool = False) -> dict[str, Any]:
    """Run the soak (with a person coming and going when presence is set) and return its figures."""
    random.seed(seed)
    folder = tempfile.mkdtemp(prefix="plancton-soak-")
    os.chmod(folder, 0o700)
    engine: services.StartedProcess | None = None
    if not services.docker_answers():
        engine = services.start_dockerd(folder)
    through_systemd = engine is None and engine_unit_active()
    services.ensure_busybox_image()
    owner: list[subprocess.Popen[bytes]] = []
    person: Person | None = None
    restarts = reloads = 0
    config_path = os.path.join(folder, "config.yaml")
    config = CONFIG + (f"input_idle: {INPUT_IDLE_SECONDS}s\n" if presence else "")

    def write_config(max_docks: int) -> None:
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(config.format(max_docks=max_docks))

    write_config(4)
    figures: dict[str, Any] | None = None
    try:
        if presence:
            person = Person()
            person.flip()  # gone, so that pilots start
        if ctl(folder, "start").returncode != 0:
            raise RuntimeError(f"the daemon did not start; see {folder}/plancton.log")
        time.sleep(60 if minutes >= 5 else 10)  # warm-up before the reference figures
        start = daemon_figures(folder)
        samples: list[tuple[float, int]] = []  # (seconds into the run, open descriptors)
        sockets: list[tuple[float, int]] = []  # (seconds into the run, Unix sockets open)
        restarted_at: list[float] = []  # seconds into the run
        began, began_wall = time.monotonic(), time.time()
        deadline = began + minutes * 60
        restart_every = min(600.0, minutes * 60 / 2)
        next_reload, next_restart, next_owner, next_person = began + 60, began + restart_every, began, began + 30
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_owner:
                for burner in owner:
                    burner.kill()
                    burner.wait()
                owner = [subprocess.Popen(BURN) for _ in range(random.choice([0, 0, 1, 2]))]
                next_owner = now + random.uniform(5, 40)
            if person is not None and now >= next_person:
                person.flip()
                # at the keyboard for a short while; away for longer, so that pilots run
                next_person = now + (random.uniform(10, 40) if person.present else random.uniform(30, 90))
            if now >= next_reload:
                write_config(random.choice([3, 4, 5]))
                ctl(folder, "reload")
                reloads += 1
                next_reload = now + 60
            if now >= next_restart:
                engine = restart_engine(folder, through_systemd) or engine
                restarts += 1
                restarted_at.append(now - began)
                next_restart = now + restart_every
            figures = daemon_figures(folder)
            samples.append((now - began, int(figures["fds"])))
            sockets.append((now - began, int(figures["sockets"])))
            time.sleep(1)
        for burner in owner:
            burner.kill()
            burner.wait()
        owner = []
        end = daemon_figures(folder)
        ctl(folder, "force-stop")
        settle = time.monotonic() + 120
        while our_containers() and time.monotonic() < settle:
            time.sleep(1)
        orphans = len(our_containers())
        status = ctl(folder, "status").returncode
        ctl(folder, "stop")
        with open(os.path.join(folder, "plancton.log"), encoding="utf-8", errors="replace") as handle:
            log = handle.read()
        paired = zip(samples, sockets, strict=True)
        others = [(moment, count - open_sockets) for (moment, count), (_, open_sockets) in paired]
        lost = engine_losses(log, began_wall)
        resets = sorted(restarted_at + lost)
        figures = {
            "minutes": minutes,
            "seed": seed,
            "pilots_started": log.count("started pilot") + log.count(" started after all"),
            "exits_handled": log.count(" exited with code "),
            "kills": log.count("stopping pilot") + log.count("killing pilot"),
            "pauses": log.count("paused pilot"),
            "reloads": reloads,
            "engine_restarts": restarts,
            "engine_restarted_through": "systemd" if through_systemd else "dockerd",
            "engine_losses": len(lost),
            "presence_changes": person.changes if person is not None else None,
            "rss_mb_start": round(start["rss_mb"], 1),
            "rss_mb_end": round(end["rss_mb"], 1),
            "fds_start": start["fds"],
            "fds_end": end["fds"],
            "fds_peak": max(count for _, count in samples),
            "sockets_start": start["sockets"],
            "sockets_end": end["sockets"],
            "sockets_floors_by_third": descriptor_floors(sockets, resets, minutes * 60),
            "sockets_judged": minutes >= SOCKETS_JUDGED_FROM_MINUTES,
            "other_fds_floors_by_third": descriptor_floors(others, resets, minutes * 60),
            "fds_floor_by_minute": [
                min((count for moment, count in samples if minute * 60 <= moment < minute * 60 + 60), default=None)
                for minute in range(math.ceil(minutes))
            ],
            "orphan_containers": orphans,
            "daemon_running_at_end": status == 0,
            "errors_logged": log.count(" ERROR "),
        }
        return figures
    finally:
        # every step runs even when one before it fails, so that no engine is left running;
        # the folder goes last, once its engine is stopped
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(remove_or_keep, folder, figures)
            if engine is not None:
                cleanup.callback(engine.stop)
            cleanup.callback(services.remove_instance, INSTANCE)
            cleanup.callback(ctl, folder, "stop")
            if person is not None:
                cleanup.callback(person.remove)
            for burner in owner:
                cleanup.callback(burner.kill)


def remove_or_keep(folder: str, figures: Mapping[str, Any] | None) -> None:
    """Remove the run's folder after a healthy run; keep it, and say where, after a run that
    failed or showed a leak, for its daemon's log."""
    if figures is not None and healthy(figures):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"soak: the run's folder, with the daemon's log, is kept in {folder}", file=sys.stderr)


def healthy(figures: Mapping[str, Any]) -> bool:
    """Given a run's figures, return whether they show no leak and no orphan: RSS grew by at
    most 10%, the descriptors' floors did not grow (the engine connections only where judged),
    no container was left and the daemon still ran."""
    first_others, last_others = figures["other_fds_floors_by_third"]
    first_sockets, last_sockets = figures["sockets_floors_by_third"]
    return bool(
        figures["rss_mb_end"] <= 1.1 * figures["rss_mb_start"]
        and last_others <= first_others
        and (last_sockets <= first_sockets or not figures["sockets_judged"])
        and figures["orphan_containers"] == 0
        and figures["daemon_running_at_end"]
    )


def _run_heading(run: Mapping[str, Any]) -> str:
    commit = f"`{run['commit'][:7]}`" if run.get("commit") else "commit not recorded"
    tree = {True: "", False: ", changed tree", None: ""}[run.get("clean")]
    started = str(run["started"])[:10] if run.get("started") else "date not recorded"
    return f"{run['minutes']:g} min, {started}, {commit}{tree}"


def _rss(run: Mapping[str, Any]) -> str:
    growth = 100 * (run["rss_mb_end"] / run["rss_mb_start"] - 1)
    return f"{run['rss_mb_start']} → {run['rss_mb_end']} MB ({growth:+.1f}%)"


def _floors(run: Mapping[str, Any]) -> str:
    others, sockets = run["other_fds_floors_by_third"], run["sockets_floors_by_third"]
    judged = "" if run["sockets_judged"] else " (not judged)"
    return f"files and pipes {others[0]} → {others[1]}; engine sockets {sockets[0]} → {sockets[1]}{judged}"


#: The rows of :func:`figures_table`: a label, and what each run shows in it.
TABLE_ROWS: tuple[tuple[str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("kernel", lambda run: str(run.get("kernel") or "not recorded")),
    ("pilots started / exits handled", lambda run: f"{run['pilots_started']} / {run['exits_handled']}"),
    ("stops and kills", lambda run: str(run["kills"])),
    ("pauses", lambda run: str(run["pauses"])),
    (
        "reloads / engine restarts",
        lambda run: f"{run['reloads']} / {run['engine_restarts']} (through {run['engine_restarted_through']})",
    ),
    ("engine stalls (the daemon dropped its connections)", lambda run: str(run.get("engine_losses", "not recorded"))),
    ("changes of the person's presence", lambda run: str(run.get("presence_changes") or "none (no --presence)")),
    ("daemon RSS, start → end (limit +10%)", _rss),
    ("open descriptors, start → end (peak)", lambda run: f"{run['fds_start']} → {run['fds_end']} ({run['fds_peak']})"),
    ("fewest open descriptors, first third → last third", _floors),
    ("orphan containers at the end", lambda run: str(run["orphan_containers"])),
    ("daemon running at the end", lambda run: "yes" if run["daemon_running_at_end"] else "no"),
    ("errors in the daemon's log", lambda run: str(run["errors_logged"])),
    ("verdict", lambda run: "no leak, no orphan" if healthy(run) else "FAILED"),
)


def figures_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Given the figures of soak runs (as --output writes them), return a Markdown table with
    a column for each run."""
    lines = ["| figure | " + " | ".join(_run_heading(run) for run in runs) + " |"]
    lines.append("|---" * (len(runs) + 1) + "|")
    lines += [f"| {label} | " + " | ".join(shown(run) for run in runs) + " |" for label, shown in TABLE_ROWS]
    return "\n".join(lines)


def main() -> int:
    """Run the soak from the command line, or show the figures of earlier runs; exit 1 when a
    figure shows a leak or an orphan."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument(
        "--presence", action="store_true", help="a person comes and goes, as systemd-logind tells (needs logind)"
    )
    parser.add_argument("--show", nargs="+", metavar="FILE", help="print the figures of these runs as a Markdown table")
    args = parser.parse_args()
    if args.show:
        runs = []
        for path in args.show:
            with open(path, encoding="utf-8") as handle:
                runs.append(json.load(handle))
        print(figures_table(runs))
        return 0 if all(map(healthy, runs)) else 1
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(1))
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    written = [args.output] if args.output else []
    source = source_of(REPO, written)
    figures = {"started": started, **source, "kernel": platform.release()}
    figures |= soak(args.minutes, args.seed, args.presence)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    return 0 if healthy(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
