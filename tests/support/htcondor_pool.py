"""A real HTCondor pool for the tests and benchmarks: the example's image (HTCondor 23.9 from
Debian 13, built by ``examples/htcondor/build-image``), a central manager with a schedd in a
container of its own on a network of its own, and jobs submitted by an ordinary user.

The manager runs the image's manager role as root (HTCondor then runs each job's shadow as
its submitter); ``submitter``, a user made inside the manager's container, submits the jobs
from a host folder bound into it, where HTCondor writes the jobs' outputs and their event log.
Pilots (Plancton's, or startds the benchmark runs itself) join the pool with an IDTOKEN that
the manager issues, from a host folder bound read-only into them.
"""

import contextlib
import os
import re
import secrets
import subprocess
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker

from tests.support import services

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPOSITORY, "examples", "htcondor")
BUILD_IMAGE = os.path.join(EXAMPLE, "build-image")
#: The pool's networks and managers carry this label, with the pool's id as its value.
POOL_LABEL = "org.plancton.test.htcondor-pool"
#: The ordinary user who submits the jobs, inside the manager's container.
SUBMITTER = "submitter"
SUBMITTER_UID = 4242
#: The uid of the pilots (Plancton's default user_group), which must own the token file.
PILOT_UID = 65534
#: Where the pilots find the pool's token (SEC_TOKEN_DIRECTORY in the image's pilot.conf).
TOKEN_DIRECTORY = "/etc/condor/tokens.d"
#: A quick pool: negotiation every 2 s (HTCondor waits 20 s between cycles by default) and
#: the schedd's news of idle jobs to the collector every 5 s.
MANAGER_ENVIRONMENT = {
    "PLANCTON_CONDOR_ROLE": "manager",
    "_condor_NEGOTIATOR_INTERVAL": "2",
    "_condor_NEGOTIATOR_MIN_INTERVAL": "1",
    "_condor_NEGOTIATOR_CYCLE_DELAY": "1",
    "_condor_SCHEDD_INTERVAL": "5",
}
START_TIMEOUT_SECONDS = 90.0
#: Job statuses as condor_q reports them (JobStatus).
IDLE, RUNNING = 1, 2
#: Event log codes: execute, evicted, terminated.
EXECUTE, EVICTED, TERMINATED = 1, 4, 5
EVENT_HEADER = re.compile(r"^(\d{3}) \((\d+)\.(\d+)\.\d+\) ", re.MULTILINE)
JOB_SCRIPT = """#!/bin/sh
# a job of the tests: sleep, then print a result that the tests can check
sleep "$2"
echo "job $1 result $(($1 * $1))"
"""
#: A job that burns one CPU for its seconds of wall time (checking the clock between rounds of
#: shell arithmetic), then prints its result as :data:`JOB_SCRIPT` does.
BURNING_JOB_SCRIPT = """#!/bin/sh
# a job of the benchmarks: burn one CPU, then print a result that they can check
end=$(($(date +%s) + $2))
while [ "$(date +%s)" -lt "$end" ]; do
    i=0
    while [ "$i" -lt 20000 ]; do i=$((i + 1)); done
done
echo "job $1 result $(($1 * $1))"
"""


def build_image(reference: str) -> str:
    """Build the example's image under ``reference`` with its build-image script (from its
    cached root file system when there is one); return the script's output.

    Raises:
        subprocess.CalledProcessError: the script failed (its output is in the error).
    """
    done = subprocess.run([BUILD_IMAGE, reference], check=True, capture_output=True, text=True, timeout=900)
    return done.stdout + done.stderr


def expected_result(process: int) -> str:
    """Return what job number ``process`` of a cluster prints."""
    return f"job {process} result {process * process}\n"


@dataclass(frozen=True)
class JobEvent:
    """One event of the jobs' event log: its code, the job ("cluster.process") and its text."""

    code: int
    job: str
    text: str


def parse_event_log(text: str) -> list[JobEvent]:
    """Given the text of an HTCondor job event log, return its events in order."""
    events = []
    for block in text.split("\n...\n"):
        match = EVENT_HEADER.search(block)
        if match:
            events.append(JobEvent(int(match.group(1)), f"{int(match.group(2))}.{int(match.group(3))}", block))
    return events


@dataclass
class Pool:
    """A running central manager with its schedd, on a network of its own."""

    client: docker.APIClient
    pool_id: str
    network: str
    manager: str
    address: str
    folder: str

    @property
    def submit_folder(self) -> str:
        """The submitter's home in the manager, on the host: jobs, outputs and event log."""
        return os.path.join(self.folder, "submit")

    @property
    def token_folder(self) -> str:
        """The host folder holding the pool's token, to bind read-only into the pilots."""
        return os.path.join(self.folder, "tokens.d")

    @classmethod
    def start(cls, image: str, folder: str, settings: Mapping[str, str] | None = None) -> "Pool":
        """Start a pool from ``image`` whose files go to ``folder``, with HTCondor
        ``settings`` (``_condor_NAME`` variables) over :data:`MANAGER_ENVIRONMENT`; return it
        once its manager answers, its submitter exists and its token is written.

        Raises:
            services.WaitTimeout: the manager did not answer in time.
        """
        pool_id = secrets.token_hex(4)
        client = docker.APIClient(base_url=f"unix://{services.DOCKER_SOCKET}", version="auto", timeout=120)
        labels = {POOL_LABEL: pool_id}
        network = f"plancton-htcondor-{pool_id}"
        client.create_network(network, labels=labels)
        submit = os.path.join(folder, "submit")
        os.makedirs(submit)
        os.chown(submit, SUBMITTER_UID, SUBMITTER_UID)
        container = client.create_container(
            image,
            name=f"plancton-htcondor-manager-{pool_id}",
            environment={**MANAGER_ENVIRONMENT, **(settings or {})},
            labels=labels,
            host_config=client.create_host_config(binds=[f"{submit}:/home/{SUBMITTER}:rw"], network_mode=network),
        )
        pool = cls(client, pool_id, network, container["Id"], "", folder)
        try:
            client.start(pool.manager)
            networks = client.inspect_container(pool.manager)["NetworkSettings"]["Networks"]
            pool.address = networks[network]["IPAddress"]
            home = f"/home/{SUBMITTER}"
            pool.run("useradd", "--uid", str(SUBMITTER_UID), "--no-create-home", "--home-dir", home, SUBMITTER)
            services.poll(pool.answers, START_TIMEOUT_SECONDS, "the HTCondor schedd to answer")
            pool.write_token()
        except BaseException:
            pool.stop()
            raise
        return pool

    def run(self, *command: str, user: str = "root", check: bool = True) -> str:
        """Run a command in the manager's container (as ``user``, in its home) and return its
        output.

        Raises:
            RuntimeError: it failed and ``check`` is set.
        """
        workdir = f"/home/{SUBMITTER}" if user == SUBMITTER else "/"
        execution = self.client.exec_create(self.manager, list(command), user=user, workdir=workdir)
        output = self.client.exec_start(execution["Id"]).decode(errors="replace")
        code = self.client.exec_inspect(execution["Id"])["ExitCode"]
        if check and code != 0:
            raise RuntimeError(f"{' '.join(command)} exited with code {code} in the manager: {output.strip()}")
        return str(output)

    def answers(self) -> bool:
        """Return whether the schedd answers condor_q (the pool takes jobs)."""
        try:
            self.run("condor_q", "-totals")
        except RuntimeError:
            return False
        return True

    def write_token(self) -> None:
        """Write an IDTOKEN of the pool's identity for the pilots, owned by their uid and
        readable by it alone (HTCondor refuses a token file that another uid owns)."""
        command = "condor_token_create -identity condor_pool@$(condor_config_val UID_DOMAIN)"

        def token() -> str:
            # the pool's signing key may still be in the writing when the schedd answers
            output = self.run("sh", "-c", command, check=False).strip()
            return output if output.startswith("eyJ") else ""

        text = services.poll(token, START_TIMEOUT_SECONDS, "the pool's signing key")
        os.makedirs(self.token_folder)
        path = os.path.join(self.token_folder, "pool")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="ascii") as handle:
            handle.write(text + "\n")
        os.chown(path, PILOT_UID, PILOT_UID)

    def pilot_environment(self, idle_seconds: float) -> dict[str, str]:
        """Return the environment that points a pilot at this pool, with an idle limit."""
        return {"_condor_CONDOR_HOST": self.address, "_condor_STARTD_NOCLAIM_SHUTDOWN": f"{idle_seconds:g}"}

    def submit(self, jobs: int, seconds: float, allowed_seconds: float | None = None, burn: bool = False) -> str:
        """Submit ``jobs`` jobs as the ordinary user, each sleeping ``seconds`` (or, with
        ``burn``, burning one CPU that long) and printing :func:`expected_result`, and saying
        it may run ``allowed_seconds`` (None: it does not say); return the cluster's id.

        Raises:
            RuntimeError: condor_submit failed.
        """
        script = os.path.join(self.submit_folder, "burn.sh" if burn else "job.sh")
        with open(script, "w", encoding="ascii") as handle:
            handle.write(BURNING_JOB_SCRIPT if burn else JOB_SCRIPT)
        os.chmod(script, 0o755)
        description = os.path.join(self.submit_folder, f"jobs-{secrets.token_hex(3)}.sub")
        allowed = f"allowed_execute_duration = {allowed_seconds:g}\n" if allowed_seconds is not None else ""
        with open(description, "w", encoding="ascii") as handle:
            handle.write(
                f"executable = {os.path.basename(script)}\n"
                f"arguments = $(Process) {seconds:g}\n"
                "output = out.$(Cluster).$(Process)\n"
                "error = err.$(Cluster).$(Process)\n"
                "log = jobs.log\n"
                "should_transfer_files = YES\n"
                "request_cpus = 1\n"
                "request_memory = 64\n"
                f"{allowed}queue {jobs}\n"
            )
        for path in (script, description):
            os.chown(path, SUBMITTER_UID, SUBMITTER_UID)
        output = self.run("condor_submit", os.path.basename(description), user=SUBMITTER)
        found = re.search(r"submitted to cluster (\d+)", output)
        if found is None:
            raise RuntimeError(f"condor_submit said: {output.strip()}")
        return found.group(1)

    def events(self) -> list[JobEvent]:
        """Return the events of the submitter's event log so far."""
        try:
            with open(os.path.join(self.submit_folder, "jobs.log"), encoding="utf-8", errors="replace") as handle:
                return parse_event_log(handle.read())
        except FileNotFoundError:
            return []

    def events_by_job(self, code: int) -> Counter[str]:
        """Return how many events of one code each job has in the event log."""
        return Counter(event.job for event in self.events() if event.code == code)

    def completed(self) -> Counter[str]:
        """Return, for each job, how many times the event log says it terminated normally with
        exit code 0."""
        return Counter(
            event.job
            for event in self.events()
            if event.code == TERMINATED and "Normal termination (return value 0)" in event.text
        )

    def results(self, cluster: str) -> dict[int, str]:
        """Return the output of each job of a cluster that has one, by job number."""
        found = {}
        prefix = f"out.{cluster}."
        for name in os.listdir(self.submit_folder):
            if name.startswith(prefix):
                with open(os.path.join(self.submit_folder, name), encoding="utf-8", errors="replace") as handle:
                    found[int(name[len(prefix) :])] = handle.read()
        return found

    def queue(self) -> dict[str, int]:
        """Return the status of each job in the queue (condor_q as the submitter)."""
        output = self.run("condor_q", "-af", "ClusterId", "ProcId", "JobStatus", user=SUBMITTER)
        statuses = {}
        for line in output.splitlines():
            cluster, process, status = line.split()
            statuses[f"{cluster}.{process}"] = int(status)
        return statuses

    def pilot_slot_attribute(self, attribute: str) -> list[str]:
        """Return an attribute of the pilots' slots as the collector lists them (condor_status)."""
        return self.run("condor_status", "-constraint", "PLANCTON_PILOT =?= true", "-af", attribute).split()

    def pilot_slots(self) -> list[str]:
        """Return the machines of the pilots' slots that the collector lists (condor_status)."""
        return sorted(self.pilot_slot_attribute("Machine"))

    def stop(self) -> None:
        """Remove the manager and the network, with anything still attached to it."""
        with contextlib.suppress(docker.errors.NotFound):
            self.client.remove_container(self.manager, force=True, v=True)
        try:
            attached: dict[str, Any] = self.client.inspect_network(self.network).get("Containers") or {}
            for container in attached:
                self.client.disconnect_container_from_network(container, self.network, force=True)
            self.client.remove_network(self.network)
        except docker.errors.NotFound:
            pass
        finally:
            self.client.close()
