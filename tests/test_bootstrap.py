"""plancton-bootstrap: the repository argument, the crontab entry, and a node set up from a
local git repository by an unprivileged user in the docker group (user mode), as a cluster
administrator would: clone, refusal without --force, rollback of an invalid configuration,
--update with a reload of the running daemon, and --dryrun.
"""

import json
import os
import pwd
import string
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plancton.cli import bootstrap, output
from plancton.config.loader import load
from plancton.errors import PlanctonError
from plancton.platform.host import host_facts
from tests.conftest import STEADY_POLICY, make_user, run_as, venv_command, wait_until
from tests.support import services

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
        path = os.path.join(repository, "config.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(config_text)
        os.chown(path, self.account.pw_uid, self.account.pw_gid)
        self.git(repository, "add", "config.yaml")
        self.git(repository, "commit", "--quiet", "-m", message)

    def crontab(self) -> str:
        listed = subprocess.run(
            ["crontab", "-l", "-u", self.account.pw_name], capture_output=True, text=True, check=False
        )
        return listed.stdout if listed.returncode == 0 else ""

    def config(self) -> str:
        with open(os.path.join(self.confdir, "config.yaml"), encoding="utf-8") as handle:
            return handle.read()

    def status(self) -> dict[str, object]:
        done = self.planctonctl("status", "--json")
        return json.loads(done.stdout)  # type: ignore[no-any-return]


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
    assert node.crontab().count("# plancton-bootstrap ") == 1


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
