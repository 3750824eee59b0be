"""plancton-bootstrap: the repository argument, the crontab entry, and a node set up from a
local git repository by an unprivileged user in the docker group (user mode), as a cluster
administrator would: clone, refusal without --force, rollback of an invalid configuration,
--update with a reload of the running daemon, and --dryrun.
"""

import json
import os
import pwd
import shlex
import socket
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from plancton.cli import bootstrap, output
from plancton.config.loader import load
from plancton.control.paths import resolve
from plancton.control.updates import UpdateFailed, UpdateOutcome, UpdateRecord, read_record, write_rejected
from plancton.core.rollout import rollout_offset
from plancton.errors import PlanctonError
from plancton.platform.host import host_facts
from tests.conftest import STEADY_POLICY, make_user, run_as, venv_command, wait_until
from tests.support import services
from tests.support.influx_server import free_port

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -- the repository argument ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "branch", "url", "expected_branch"),
    [
        ("alice/plancton-conf", None, "https://github.com/alice/plancton-conf.git", None),
        ("alice/plancton-conf:prod", None, "https://github.com/alice/plancton-conf.git", "prod"),
        ("ALICE-Torino/conf.d", "release/v2", "https://github.com/ALICE-Torino/conf.d.git", "release/v2"),
        ("https://git.example.org/farm/conf.git", None, "https://git.example.org/farm/conf.git", None),
        ("file:///srv/conf", "main", "file:///srv/conf", "main"),
        ("/srv/git/conf.git", None, "/srv/git/conf.git", None),
        ("git@git.example.org:farm/conf.git", None, "git@git.example.org:farm/conf.git", None),
    ],
)
def test_repository_arguments_that_are_accepted(text: str, branch: str | None, url: str, expected_branch: str | None):
    assert bootstrap.parse_source(text, branch) == bootstrap.Source(url, expected_branch)


@pytest.mark.parametrize(
    ("text", "branch"),
    [
        ("", None),
        ("alice", None),
        ("alice/conf;touch /tmp/owned", None),
        ("alice/conf $(reboot)", None),
        ("-ualice/conf", None),
        ("--upload-pack=touch /tmp/owned", None),
        ("ext::sh -c touch% /tmp/owned", None),
        ("alice/..", None),
        ("alice/conf:-b", None),
        ("alice/conf:a..b", None),
        ("alice/conf", "--upload-pack=x"),
        ("alice/conf:main", "dev"),
        ("relative/../path", "main/"),
        ("file:///srv/conf\n", None),
        ("https://host/conf\x00", None),
    ],
)
def test_repository_arguments_that_are_refused(text: str, branch: str | None):
    with pytest.raises(PlanctonError):
        bootstrap.parse_source(text, branch)


@given(st.text(alphabet=string.printable + "\x00\x7f", max_size=40), st.none() | st.text(max_size=20))
def test_nothing_accepted_reads_as_an_option_or_splits(text: str, branch: str | None):
    try:
        source = bootstrap.parse_source(text, branch)
    except PlanctonError:
        return
    for part in (source.url, source.branch or "x"):
        assert not part.startswith("-")
        assert part.isprintable() and not any(character.isspace() for character in part)


def test_boot_entry_replaces_its_own_line_and_keeps_the_others():
    marker = "# plancton-bootstrap /home/a/.plancton/conf"
    others = "MAILTO=a\n0 3 * * * backup  # plancton-bootstrap /srv/other/conf\n"
    first = bootstrap.with_boot_entry(others, "@reboot planctonctl start", marker)
    assert first == others + f"@reboot planctonctl start  {marker}\n"
    second = bootstrap.with_boot_entry(first, "@reboot /new/planctonctl start", marker)
    assert second == others + f"@reboot /new/planctonctl start  {marker}\n"
    assert bootstrap.with_boot_entry(second, "@reboot /new/planctonctl start", marker) == second
    assert bootstrap.with_boot_entry("", "@reboot x", marker) == f"@reboot x  {marker}\n"


def test_command_line_needs_exactly_one_action(tmp_path: "os.PathLike[str]"):
    folders = ["--confdir", os.path.join(tmp_path, "conf"), "--rundir", os.path.join(tmp_path, "run")]
    assert bootstrap.main(folders) == output.EXIT_USAGE
    assert bootstrap.main([*folders, "--update", "alice/conf"]) == output.EXIT_USAGE
    assert bootstrap.main([*folders, "--dryrun", "--branch", "main"]) == output.EXIT_USAGE
    assert not os.path.exists(os.path.join(tmp_path, "conf"))


# -- a node set up by an unprivileged user ------------------------------------------------------


@dataclass
class NodeUser:
    """A user in the docker group who sets up Plancton in user mode."""

    account: pwd.struct_passwd

    @property
    def confdir(self) -> str:
        return os.path.join(self.account.pw_dir, ".plancton", "conf")

    def run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command as this user, with its own HOME, and return the finished process."""
        return run_as(self.account, *command, timeout=timeout)

    def bootstrap(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run plancton-bootstrap as this user."""
        installed = venv_command("plancton-bootstrap")
        command = [installed] if os.path.isabs(installed) else [sys.executable, f"{CHECKOUT}/bin/plancton-bootstrap"]
        return self.run(*command, *args, timeout=360)

    def planctonctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run planctonctl as this user (user mode)."""
        return self.run(venv_command("planctonctl"), *args)

    def git(self, repository: str, *args: str) -> str:
        """Run git in a repository of this user's and return its output."""
        identity = ["-c", "user.name=Plancton Test", "-c", "user.email=test@plancton.invalid"]
        done = self.run("git", *identity, "-C", repository, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def make_repository(self, name: str, config_text: str) -> str:
        """Create a configuration repository in this user's home; return its path."""
        path = os.path.join(self.account.pw_dir, name)
        assert self.run("git", "init", "--quiet", "--initial-branch", "main", path).returncode == 0
        self.commit(path, config_text, "first configuration")
        return path

    def commit(self, repository: str, config_text: str, message: str) -> None:
        """Commit a new config.yaml in a repository."""
        self.commit_files(repository, {"config.yaml": config_text}, message)

    def commit_files(self, repository: str, texts: dict[str, str], message: str, *options: str) -> None:
        """Commit files (path in the repository: text) in a repository, with these options of
        git commit."""
        for name, text in texts.items():
            path = os.path.join(repository, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            subprocess.run(["chown", "-R", f"{self.account.pw_name}:", repository], check=True)
            self.git(repository, "add", name)
        self.git(repository, "commit", "--quiet", *options, "-m", message)

    def crontab(self) -> str:
        listed = subprocess.run(
            ["crontab", "-l", "-u", self.account.pw_name], capture_output=True, text=True, check=False
        )
        return listed.stdout if listed.returncode == 0 else ""

    def config(self) -> str:
        with open(os.path.join(self.confdir, "config.yaml"), encoding="utf-8") as handle:
            return handle.read()

    def status(self) -> dict[str, Any]:
        done = self.planctonctl("status", "--json")
        return dict(json.loads(done.stdout))

    def log(self) -> str:
        """Return the log of this user's daemon so far."""
        with open(os.path.join(self.account.pw_dir, ".plancton", "log", "plancton.log"), encoding="utf-8") as handle:
            return handle.read()


@pytest.fixture
def node(instance: str) -> Iterator[NodeUser]:
    """A fresh user in the docker group; its daemon, crontab and home go afterwards (before
    the instance's containers are removed, so that the daemon cannot start one more)."""
    name = "plancton-node"
    user = NodeUser(make_user(name, ["docker"]))
    yield user
    user.planctonctl("stop", "--timeout", "20")
    subprocess.run(["crontab", "-r", "-u", name], capture_output=True, check=False)
    subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)


def pilot_config(instance: str, seconds: int = 60) -> str:
    """A configuration that keeps one busybox pilot running on this busy test machine."""
    return f"instance: {instance}\n{STEADY_POLICY}max_docks: 1\ndocker_cmd: [sleep, '{seconds}']\n"


@pytest.mark.docker
def test_bootstrap_then_update_reloads_the_running_daemon(
    node: NodeUser, instance: str, docker_api: docker.APIClient
) -> None:
    repository = node.make_repository("farm-conf", pilot_config(instance))

    cloned = node.bootstrap(repository)
    assert cloned.returncode == 0, cloned.stderr
    assert node.config() == pilot_config(instance)
    assert os.stat(node.confdir).st_uid == node.account.pw_uid
    assert os.stat(node.confdir).st_mode & 0o077 == 0
    boot_lines = [line for line in node.crontab().splitlines() if line.startswith("@reboot")]
    assert len(boot_lines) == 1 and f"--confdir {node.confdir}" in boot_lines[0] and " start " in boot_lines[0]

    again = node.bootstrap(repository)
    assert again.returncode == 1 and "--force" in again.stderr

    started = node.planctonctl("start")
    assert started.returncode == 0, started.stderr
    wait_until(lambda: services.running_ids(docker_api, instance), 120, "a pilot")
    first_revision = node.status()["config_revision"]

    node.commit(repository, pilot_config(instance, seconds=61), "longer pilots")
    updated = node.bootstrap("--update")
    assert updated.returncode == 0, updated.stderr
    assert "reload requested" in updated.stdout
    assert node.config() == pilot_config(instance, seconds=61)
    wait_until(lambda: node.status()["config_revision"] != first_revision, 60, "the daemon on the new configuration")
    new_revision = node.status()["config_revision"]

    good_commit = node.git(node.confdir, "rev-parse", "HEAD")
    node.commit(repository, pilot_config(instance) + "max_dock_mem: lots\n", "a typo")
    rejected = node.bootstrap("--update")
    assert rejected.returncode == 1
    assert "max_dock_mem" in rejected.stderr and "unchanged" in rejected.stderr
    assert node.git(node.confdir, "rev-parse", "HEAD") == good_commit
    assert node.config() == pilot_config(instance, seconds=61)
    status = node.status()
    assert status["running"] and status["config_revision"] == new_revision


@pytest.mark.docker
def test_invalid_repository_is_rolled_back_and_force_replaces(node: NodeUser, instance: str) -> None:
    valid = node.make_repository("conf-a", pilot_config(instance))
    broken = node.make_repository("conf-b", "max_docks: -3\nmain_sleep: soon\n")
    other = node.make_repository("conf-c", pilot_config(instance, seconds=90))
    assert node.bootstrap(valid).returncode == 0

    rolled_back = node.bootstrap("--force", f"file://{broken}")
    assert rolled_back.returncode == 1
    assert "max_docks" in rolled_back.stderr and "main_sleep" in rolled_back.stderr
    assert node.config() == pilot_config(instance)
    assert node.git(node.confdir, "remote", "get-url", "origin") == valid
    assert sorted(os.listdir(os.path.dirname(node.confdir))) == ["conf"]  # no half-made folder left

    replaced = node.bootstrap("--force", other)
    assert replaced.returncode == 0, replaced.stderr
    assert node.config() == pilot_config(instance, seconds=90)
    assert node.git(node.confdir, "remote", "get-url", "origin") == other
    assert node.crontab().count(f"# plancton-bootstrap {node.confdir}") == 1  # the @reboot line, once
    assert node.crontab().count(f"# plancton-bootstrap update {node.confdir}") == 1


@pytest.mark.docker
def test_dryrun_installs_an_empty_configuration(node: NodeUser) -> None:
    installed = node.bootstrap("--dryrun")
    assert installed.returncode == 0, installed.stderr
    config, warnings = load(os.path.join(node.confdir, "config.yaml"), host_facts())
    assert config.from_file == frozenset() and warnings == []
    assert "@reboot" in node.crontab()

    assert node.bootstrap("--dryrun").returncode == 1
    assert node.bootstrap("--dryrun", "--force").returncode == 0


# -- right after ./install: the default configuration ------------------------------------------

SHIPPED_DEFAULT = os.path.join(CHECKOUT, "etc", "config.yaml")


def _folder_with(tmp_path: "os.PathLike[str]", files: dict[str, str]) -> str:
    folder = os.path.join(tmp_path, "conf")
    os.makedirs(folder)
    for name, text in files.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    return folder


def _shipped() -> str:
    with open(SHIPPED_DEFAULT, encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.parametrize(
    ("files", "default"),
    [
        ({"config.yaml": _shipped()}, True),
        # an earlier release's default: the same heading, other comments, no key set
        (
            {"config.yaml": _shipped().splitlines()[0] + "\n# Every key is listed with its default.\n#max_docks: 4\n"},
            True,
        ),
        ({"config.yaml": _shipped().replace("#max_docks:", "max_docks: 2\n#max_docks:")}, False),
        ({"config.yaml": bootstrap.EMPTY_CONFIG}, False),
        ({"config.yaml": _shipped(), "condor.conf": "x\n"}, False),
        ({"other.yaml": _shipped()}, False),
    ],
)
def test_the_default_that_install_wrote_is_told_from_an_edited_one(
    tmp_path: "os.PathLike[str]", files: dict[str, str], default: bool
) -> None:
    assert bootstrap.is_install_default(_folder_with(tmp_path, files)) is default


@pytest.mark.docker
def test_bootstrap_right_after_install_replaces_the_default_and_binds_the_repositorys_files(
    node: NodeUser, instance: str, docker_api: docker.APIClient
) -> None:
    # what ./install leaves: the default configuration in the config folder
    os.makedirs(node.confdir, mode=0o700)
    with open(os.path.join(node.confdir, "config.yaml"), "w", encoding="utf-8") as handle:
        handle.write(_shipped())
    subprocess.run(["chown", "-R", f"{node.account.pw_name}:", os.path.dirname(node.confdir)], check=True)
    # the original's layout: config.yaml beside a file it binds into the pilots, on a branch
    text = pilot_config(instance).replace(
        "docker_cmd: [sleep, '60']\n",
        "docker_cmd: [sh, -c, 'cat /etc/pilot/site.conf; sleep 60']\n"
        f"binds: ['{node.confdir}/site.conf:/etc/pilot/site.conf']\n",
    )
    repository = node.make_repository("site-conf", "max_docks: 0\n")
    node.git(repository, "checkout", "--quiet", "-b", "to-node")
    with open(os.path.join(repository, "site.conf"), "w", encoding="utf-8") as handle:
        handle.write("site=torino\n")
    os.chown(os.path.join(repository, "site.conf"), node.account.pw_uid, node.account.pw_gid)
    node.git(repository, "add", "site.conf")
    node.commit(repository, text, "pilot configuration")

    done = node.bootstrap("--branch", "to-node", repository)
    assert done.returncode == 0, done.stderr
    assert "replaced the default configuration that install wrote" in done.stdout
    backups = [name for name in os.listdir(os.path.dirname(node.confdir)) if name.startswith("conf.replaced-")]
    assert len(backups) == 1
    with open(os.path.join(os.path.dirname(node.confdir), backups[0], "config.yaml"), encoding="utf-8") as handle:
        assert handle.read() == _shipped()
    assert node.config() == text
    assert "note: binds: " in done.stdout and "read-only in the pilots" in done.stdout

    assert node.planctonctl("start").returncode == 0
    ids = wait_until(lambda: services.running_ids(docker_api, instance), 120, "a pilot")
    assert isinstance(ids, set)
    pilot = next(iter(ids))
    wait_until(lambda: b"site=torino" in docker_api.logs(pilot), 60, "the bound file in the pilot's output")


@pytest.mark.docker
def test_an_edited_configuration_is_replaced_only_with_force_and_kept(node: NodeUser, instance: str) -> None:
    os.makedirs(node.confdir, mode=0o700)
    edited = _shipped().replace("#max_docks:", "max_docks: 2\n#max_docks:")
    with open(os.path.join(node.confdir, "config.yaml"), "w", encoding="utf-8") as handle:
        handle.write(edited)
    subprocess.run(["chown", "-R", f"{node.account.pw_name}:", os.path.dirname(node.confdir)], check=True)
    repository = node.make_repository("conf-a", pilot_config(instance))

    refused = node.bootstrap(repository)
    assert refused.returncode == 1 and "not the default one" in refused.stderr and "--force" in refused.stderr
    assert node.config() == edited

    forced = node.bootstrap("--force", repository)
    assert forced.returncode == 0, forced.stderr
    assert "replaced the previous configuration; it is kept in " in forced.stdout
    kept = forced.stdout.split("it is kept in ")[1].split()[0]
    with open(os.path.join(kept, "config.yaml"), encoding="utf-8") as handle:
        assert handle.read() == edited
    assert node.config() == pilot_config(instance)


# -- per-node overlays ----------------------------------------------------------------------------


def pilot_command(api: docker.APIClient, instance: str) -> list[str]:
    """Wait for one running pilot of this instance; return its command."""
    ids = wait_until(lambda: services.running_ids(api, instance), 120, "a pilot")
    assert isinstance(ids, set)
    return list(api.inspect_container(next(iter(ids)))["Config"]["Cmd"])


def update_line(node: NodeUser) -> tuple[str, list[str]]:
    """Return the schedule and the command of the user's crontab line that updates its node."""
    marker = f"  # plancton-bootstrap update {node.confdir}"
    (line,) = [line for line in node.crontab().splitlines() if line.endswith(marker)]
    fields = shlex.split(line.removesuffix(marker))
    return " ".join(fields[:5]), fields[5:]


def option_of(arguments: list[str], name: str) -> str:
    """Return the value that follows an option in an argument list."""
    return arguments[arguments.index(name) + 1]


def origins(shown: str) -> dict[str, str]:
    """Return, from planctonctl config's output, each key's origin."""
    return {line.split(":")[0]: line.rpartition("  # ")[2] for line in shown.splitlines() if not line.startswith("#")}


@pytest.mark.docker
def test_overlays_select_a_node_by_its_labels_and_a_bad_one_is_refused_with_its_file(
    node: NodeUser, instance: str, docker_api: docker.APIClient
) -> None:
    repository = node.make_repository("farm-conf", pilot_config(instance))
    labelled = "match: {labels: [plancton-test]}\ndocker_cmd: [sleep, '62']\n"
    elsewhere = "match: {hosts: [no-such-host-*]}\nmax_docks: 5\n"
    node.commit_files(repository, {"hosts/10-test.yaml": labelled, "hosts/20-other.yaml": elsewhere}, "overlays")

    cloned = node.bootstrap("--label", "plancton-test", repository)
    assert cloned.returncode == 0, cloned.stderr
    assert "this node's labels: plancton-test" in cloned.stdout
    assert f"warning: anyone who can push to {repository} can run any image" in cloned.stdout
    schedule, command = update_line(node)
    assert schedule == "*/15 * * * *"
    assert command[1:4] == ["--update", "--jitter", "900"] and option_of(command, "--confdir") == node.confdir
    cron_update = [*command[:3], "1", *command[4:]]  # the line cron runs, with a short random wait
    shown = node.planctonctl("config")
    assert shown.returncode == 0, shown.stderr
    assert "# with the overlays that select this node, in this order: hosts/10-test.yaml" in shown.stdout
    assert origins(shown.stdout)["docker_cmd"] == "hosts/10-test.yaml"
    assert origins(shown.stdout)["max_docks"] == "config.yaml"
    assert origins(shown.stdout)["docker_image"] == "default"

    assert node.planctonctl("start").returncode == 0
    assert pilot_command(docker_api, instance) == ["sleep", "62"]
    running = node.status()["config_revision"]

    # an overlay that makes this node's configuration invalid: refused, nothing moves
    good_commit = node.git(node.confdir, "rev-parse", "HEAD")
    node.commit_files(repository, {"hosts/10-test.yaml": labelled + "max_dock_mem: lots\n"}, "a typo")
    refused = node.bootstrap("--update")
    assert refused.returncode == 1
    assert "unchanged" in refused.stderr and "max_dock_mem (set by hosts/10-test.yaml)" in refused.stderr
    assert node.git(node.confdir, "rev-parse", "HEAD") == good_commit
    assert node.status()["config_revision"] == running

    # the repository's own CI sees the same problem in a checkout, whichever nodes it selects
    node.commit_files(repository, {"hosts/20-other.yaml": elsewhere + "main_sleep: never\n"}, "another typo")
    checked = node.bootstrap("--check", repository)
    assert checked.returncode == 1
    assert "config.yaml + hosts/10-test.yaml: max_dock_mem (set by hosts/10-test.yaml)" in checked.stderr
    assert "config.yaml + hosts/20-other.yaml: main_sleep (set by hosts/20-other.yaml)" in checked.stderr
    node.commit_files(repository, {"hosts/10-test.yaml": labelled, "hosts/20-other.yaml": elsewhere}, "fixed")
    checked = node.bootstrap("--check", repository)
    assert checked.returncode == 0, checked.stderr
    overlays = "(hosts/10-test.yaml, hosts/20-other.yaml)"
    assert f"valid: config.yaml, alone and with each overlay over it {overlays}" in checked.stdout

    # the repository is out of reach: nothing changes, and the next update takes the fix
    os.rename(repository, f"{repository}.away")
    unreachable = node.run(*cron_update, timeout=360)
    assert unreachable.returncode == 1 and len(unreachable.stderr.splitlines()) == 1, unreachable.stderr
    assert "cannot fetch the configuration repository (git fetch failed: " in unreachable.stderr
    assert node.git(node.confdir, "rev-parse", "HEAD") == good_commit
    assert node.status()["config_update"]["outcome"] == "unreachable"
    os.rename(f"{repository}.away", repository)
    fixed = node.bootstrap("--update")
    assert fixed.returncode == 0, fixed.stderr
    assert "warning" not in fixed.stdout and node.status()["config_update"]["outcome"] == "updated"
    # the fixed commit changes nothing for this node: the same configuration, the same revision
    assert node.status()["config_revision"] == running

    # the node loses its label: the daemon's reload merges as the loader does
    os.unlink(os.path.join(node.account.pw_dir, ".plancton", "state", "labels"))
    assert node.planctonctl("reload").returncode == 0
    wait_until(lambda: node.status()["config_revision"] != running, 60, "the daemon without the overlay")
    assert origins(node.planctonctl("config").stdout)["docker_cmd"] == "config.yaml"


# -- signed revisions ---------------------------------------------------------------------------


def signing_key(node: NodeUser, name: str) -> str:
    """Make an ed25519 key of this user's with ssh-keygen; return its private key's path."""
    path = os.path.join(node.account.pw_dir, name)
    made = node.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path)
    assert made.returncode == 0, made.stderr
    return path


def commit_signed(node: NodeUser, repository: str, key: str | None, *options: str) -> str:
    """Make a commit (git commit with these options), signed with this ssh key when one is
    given; return its hash."""
    signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"] if key else []
    node.git(repository, *signing, "commit", "--quiet", *(["-S"] if key else []), *options)
    return node.git(repository, "rev-parse", "HEAD")


def metric(port: int, name: str, **labels: str) -> float | None:
    """Return a sample of the daemon's Prometheus endpoint, or None when it has none."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


@pytest.mark.docker
def test_with_trust_only_commits_signed_by_a_trusted_key_are_taken(
    node: NodeUser, instance: str, docker_api: docker.APIClient
) -> None:
    trusted, stranger = signing_key(node, "trusted"), signing_key(node, "stranger")
    signers = os.path.join(node.account.pw_dir, "allowed-signers")
    with open(f"{trusted}.pub", encoding="utf-8") as public, open(signers, "w", encoding="utf-8") as handle:
        handle.write("# the farm's administrators\nadmin@farm " + " ".join(public.read().split()[:2]) + "\n")
    port = free_port()
    config = pilot_config(instance) + f"metrics_listen: 127.0.0.1:{port}\n"
    repository = node.make_repository("signed-conf", config)  # an unsigned first commit

    refused = node.bootstrap("--trust", signers, repository)
    assert refused.returncode == 1
    unsigned = node.git(repository, "rev-parse", "HEAD")
    assert refused.stderr == (
        f"plancton-bootstrap: refused commit {unsigned[:12]}: it is not signed; sign it with a trusted ssh key "
        "(git -c gpg.format=ssh commit -S); the configuration is unchanged\n"
    )
    assert not os.path.exists(node.confdir)

    commit_signed(node, repository, trusted, "--amend", "--no-edit")
    cloned = node.bootstrap("--trust", signers, "--every", "1h", repository)
    assert cloned.returncode == 0, cloned.stderr
    assert update_line(node)[0] == "0 * * * *"
    assert "updates take only commits signed by a key of " in cloned.stdout and "warning" not in cloned.stdout
    assert node.planctonctl("start").returncode == 0
    wait_until(lambda: services.running_ids(docker_api, instance), 120, "a pilot")
    wait_until(lambda: metric(port, "plancton_config_update_failed", reason="untrusted") == 0, 60, "the metrics")
    running, good = node.status()["config_revision"], node.git(node.confdir, "rev-parse", "HEAD")

    for key, why in ((None, "it is not signed"), (stranger, "it is signed by key SHA256:")):
        commit = commit_signed(node, repository, key, "--allow-empty", "-m", "a new revision")
        update = node.bootstrap("--update")
        assert update.returncode == 1
        assert update.stderr.startswith(f"plancton-bootstrap: refused commit {commit[:12]}: {why}")
        assert len(update.stderr.splitlines()) == 1
        assert node.git(node.confdir, "rev-parse", "HEAD") == good
        status = node.status()
        assert status["config_revision"] == running
        assert status["config_update"] == {**status["config_update"], "outcome": "untrusted", "commit": commit}
        assert "configuration update FAILED at " in node.planctonctl("status").stdout
        wait_until(lambda: metric(port, "plancton_config_update_failed", reason="untrusted") == 1, 60, "the alert")

    commit_signed(node, repository, trusted, "--allow-empty", "-m", "signed")
    taken = node.bootstrap("--update")
    assert taken.returncode == 0, taken.stderr
    assert node.git(node.confdir, "rev-parse", "HEAD") == node.git(repository, "rev-parse", "HEAD")
    assert node.status()["config_update"] == {**node.status()["config_update"], "outcome": "updated"}
    wait_until(lambda: metric(port, "plancton_config_update_failed", reason="untrusted") == 0, 60, "the alert gone")


@pytest.mark.docker
def test_a_commit_whose_pilots_cannot_start_is_rolled_back_and_never_taken_again(
    node: NodeUser, instance: str, docker_api: docker.APIClient
) -> None:
    port = free_port()
    good_config = pilot_config(instance, seconds=600) + f"metrics_listen: 127.0.0.1:{port}\n"
    repository = node.make_repository("staged-conf", good_config)
    assert node.bootstrap(repository).returncode == 0
    assert node.planctonctl("start").returncode == 0
    wait_until(lambda: services.running_ids(docker_api, instance), 120, "a pilot")
    good, running = node.git(node.confdir, "rev-parse", "HEAD"), node.status()["config_revision"]

    # an image that no node has, with the running pilots replaced by its own
    missing = "docker_image: plancton-missing-image:none\npull_policy: never\nreplace_on_image_change: true\n"
    node.commit(repository, good_config + missing + "rollout: {watch: 10m}\n", "a new pilot image")
    bad = node.git(repository, "rev-parse", "HEAD")
    taken = node.bootstrap("--update")
    assert taken.returncode == 0, taken.stderr
    wait_until(
        lambda: node.status()["config_update"]["outcome"] == "rolled_back", 120, "the node to roll the commit back"
    )
    assert node.status()["revision_trial"] is None
    assert node.git(node.confdir, "rev-parse", "HEAD") == good
    assert node.config() == good_config
    wait_until(lambda: node.status()["config_revision"] == running, 60, "the daemon on the previous revision")
    wait_until(lambda: services.running_ids(docker_api, instance), 120, "a pilot of the previous revision")
    log = node.log()
    assert f"(commit {bad[:12]}): pilots cannot start (its image cannot be had)" in log
    assert f"going back to commit {good[:12]}" in log
    status = node.status()["config_update"]
    assert status["failed"] and status["commit"] == bad and "not taken again" in status["message"]
    wait_until(lambda: metric(port, "plancton_config_update_failed", reason="rolled_back") == 1, 60, "the metric")

    # the next updates leave the rejected commit alone, until a newer one comes
    again = node.bootstrap("--update")
    assert again.returncode == 0 and "was rolled back on this node" in again.stdout
    assert node.git(node.confdir, "rev-parse", "HEAD") == good
    # one more pilot, whose start proves the new revision
    fixed = f"instance: {instance}\n{STEADY_POLICY}max_docks: 2\ndocker_cmd: [sleep, '600']\n"
    node.commit(repository, fixed + f"metrics_listen: 127.0.0.1:{port}\n", "fixed")
    assert node.bootstrap("--update").returncode == 0
    newest = node.git(repository, "rev-parse", "HEAD")
    assert node.git(node.confdir, "rev-parse", "HEAD") == newest
    wait_until(lambda: metric(port, "plancton_config_update_failed", reason="rolled_back") == 0, 60, "the alert gone")
    # its pilots run: the new revision passes its health check
    wait_until(lambda: "passed its health check" in node.log(), 120, "the health check to pass")


@dataclass
class Checkout:
    """A configuration repository and a node's checkout of it, in a test's folder, updated by
    plancton-bootstrap in this process (no daemon, nothing arranged on the host)."""

    root: str

    @property
    def repository(self) -> str:
        return os.path.join(self.root, "repository")

    @property
    def folder(self) -> str:
        return os.path.join(self.root, "conf")

    def git(self, *args: str) -> str:
        identity = ["-c", "user.name=Plancton Test", "-c", "user.email=test@plancton.invalid"]
        done = subprocess.run(["git", *identity, *args], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def commit(self, text: str) -> str:
        with open(os.path.join(self.repository, "config.yaml"), "w", encoding="utf-8") as handle:
            handle.write(text)
        self.git("-C", self.repository, "add", "config.yaml")
        self.git("-C", self.repository, "commit", "--quiet", "-m", text)
        return self.git("-C", self.repository, "rev-parse", "HEAD")

    def head(self) -> str:
        return self.git("-C", self.folder, "rev-parse", "HEAD")

    def update(self) -> int:
        folders = ["--user", "--confdir", self.folder, "--statedir", os.path.join(self.root, "state")]
        folders += ["--rundir", os.path.join(self.root, "run"), "--logdir", os.path.join(self.root, "log")]
        return bootstrap.main([*folders, "--update"])

    def record(self) -> UpdateRecord:
        record = read_record(os.path.join(self.root, "state", "config-update.json"))
        assert record is not None
        return record


@pytest.fixture
def checkout(tmp_path: "os.PathLike[str]") -> Checkout:
    made = Checkout(str(tmp_path))
    made.git("init", "--quiet", "--initial-branch", "main", made.repository)
    made.commit("max_docks: 1\n")
    made.git("clone", "--quiet", made.repository, made.folder)
    return made


def test_a_commit_with_a_rollout_window_waits_for_this_nodes_turn(checkout: Checkout) -> None:
    first = checkout.head()
    checkout.commit("max_docks: 2\nrollout: {window: 7d}\n")
    assert checkout.update() == 0
    record = checkout.record()
    assert record.outcome is UpdateOutcome.WAITING and not record.failed
    with open(os.path.join(checkout.root, "state", "rollout-seen.json"), encoding="utf-8") as handle:
        seen = json.load(handle)["seen_at"]
    turn = time.localtime(seen + rollout_offset(socket.gethostname(), 7 * 86400))
    when = time.strftime("%Y-%m-%d %H:%M:%S", turn)
    assert record.message.endswith(f"rolls out over 7d 0h: this node takes it at {when}")
    assert checkout.head() == first
    # the next update counts from when the commit was first seen, not again from now
    assert checkout.update() == 0
    assert checkout.record().message == record.message


def test_a_commit_the_daemon_rejected_is_gone_back_from_by_the_next_update(checkout: Checkout) -> None:
    first = checkout.head()
    taken = checkout.commit("max_docks: 2\n")
    assert checkout.update() == 0 and checkout.head() == taken
    # the daemon of an installed service keeps the commit as rejected, the folder being root's
    write_rejected(resolve(True, checkout.folder, statedir=os.path.join(checkout.root, "state")), taken)
    assert checkout.update() == 0
    assert checkout.head() == first
    record = checkout.record()
    assert record.outcome is UpdateOutcome.ROLLED_BACK and record.failed and record.commit == taken
    assert checkout.update() == 0 and checkout.head() == first
    assert "was rolled back on this node" in checkout.record().message
    newer = checkout.commit("max_docks: 3\n")
    assert checkout.update() == 0 and checkout.head() == newer


def test_a_trust_file_that_lists_no_key_is_refused(tmp_path: "os.PathLike[str]") -> None:
    signers = os.path.join(tmp_path, "signers")
    with open(signers, "w", encoding="utf-8") as handle:
        handle.write("# nobody yet\nadmin@farm AAAAC3NzaC1lZDI1NTE5AAAAIB\n")
    folders = ["--confdir", os.path.join(tmp_path, "conf"), "--statedir", os.path.join(tmp_path, "state")]
    with pytest.raises(PlanctonError, match="line 2 is not an allowed signer; expected PRINCIPAL KEYTYPE KEY"):
        bootstrap.read_signers(signers)
    assert bootstrap.main([*folders, "--trust", signers, "/srv/conf"]) == output.EXIT_FAILURE
    assert not os.path.exists(os.path.join(tmp_path, "conf"))
    assert bootstrap.main([*folders, "--update", "--trust", signers]) == output.EXIT_USAGE


@pytest.mark.parametrize(
    ("every", "seconds", "schedule"),
    [
        ("1m", 60, "* * * * *"),
        ("15m", 900, "*/15 * * * *"),
        ("900", 900, "*/15 * * * *"),
        ("1h", 3600, "0 * * * *"),
        ("6h", 21600, "0 */6 * * *"),
        ("24h", 86400, "0 0 * * *"),
    ],
)
def test_the_interval_of_updates_is_one_cron_can_keep(every: str, seconds: float, schedule: str) -> None:
    assert bootstrap.parse_every(every) == seconds
    assert bootstrap.cron_schedule(seconds) == schedule
    assert f"RandomizedDelaySec={seconds}s" in bootstrap.timer_dropin(seconds)


@pytest.mark.parametrize("every", ["7m", "90s", "5h", "2d", "0", "soon", "-15m"])
def test_an_interval_cron_cannot_keep_is_refused_with_examples(every: str) -> None:
    with pytest.raises(PlanctonError, match=f"--every {every}: expected whole minutes that divide an hour"):
        bootstrap.parse_every(every)


def test_git_tells_which_commits_a_trusted_key_signed(tmp_path: "os.PathLike[str]") -> None:
    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
        return done.stdout.strip()

    for name in ("trusted", "stranger"):
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", os.path.join(tmp_path, name))
    signers = os.path.join(tmp_path, "allowed-signers")
    with open(os.path.join(tmp_path, "trusted.pub"), encoding="utf-8") as public:
        key = " ".join(public.read().split()[:2])
    with open(signers, "w", encoding="utf-8") as handle:
        handle.write(f"admin@farm {key}\n")
    bootstrap.read_signers(signers)
    repository = os.path.join(tmp_path, "conf")
    run("git", "init", "--quiet", repository)
    identity = ["-c", "user.name=Plancton Test", "-c", "user.email=test@plancton.invalid", "-C", repository]
    commits = {}
    for name in ("unsigned", "trusted", "stranger"):
        signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={tmp_path}/{name}"] if name != "unsigned" else []
        sign = ["-S"] if signing else []
        run("git", *identity, *signing, "commit", "--quiet", "--allow-empty", *sign, "-m", name)
        commits[name] = run("git", "-C", repository, "rev-parse", "HEAD")

    bootstrap.check_signed(repository, commits["trusted"], signers)
    for name, why in (("unsigned", "it is not signed"), ("stranger", "it is signed by key SHA256:")):
        with pytest.raises(UpdateFailed) as refused:
            bootstrap.check_signed(repository, commits[name], signers)
        assert str(refused.value).startswith(f"refused commit {commits[name][:12]}: {why}")
        assert str(refused.value).endswith("; the configuration is unchanged")
        assert refused.value.outcome is UpdateOutcome.UNTRUSTED and refused.value.commit == commits[name]


def test_check_validates_a_checkout_for_the_repositorys_ci(
    tmp_path: "os.PathLike[str]", capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder_with(tmp_path, {"config.yaml": "max_docks: 2\n"})
    os.mkdir(os.path.join(folder, "hosts"))
    with open(os.path.join(folder, "hosts", "big.yaml"), "w", encoding="utf-8") as handle:
        handle.write("match: {ncpus: {min: 64}}\nmax_docks: ncpus - 4\n")
    assert bootstrap.main(["--check", folder]) == output.EXIT_OK
    valid = "valid: config.yaml, alone and with each overlay over it (hosts/big.yaml), on a host of"
    assert valid in capsys.readouterr().out
    with open(os.path.join(folder, "hosts", "bad.yaml"), "w", encoding="utf-8") as handle:
        handle.write("match: {ncpus: '>=64'}\n")
    assert bootstrap.main(["--check", folder]) == output.EXIT_FAILURE
    assert "hosts/bad.yaml: match.ncpus: expected {min: 32}" in capsys.readouterr().err
    assert bootstrap.main(["--check", folder, "--label", "gpu"]) == output.EXIT_USAGE
