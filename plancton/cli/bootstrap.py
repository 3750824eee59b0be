"""``plancton-bootstrap``: a cluster node's configuration from a git repository.

``plancton-bootstrap USER/REPO[:BRANCH]`` (GitHub) or ``plancton-bootstrap URL`` clones the
repository into the config folder, validates its configuration (``config.yaml`` and the
overlays ``hosts/*.yaml`` that select this node, see :mod:`plancton.config.overlays`) before
accepting it, arranges for Plancton to start at boot (the systemd unit where systemd runs and
the folders are root's, a crontab @reboot line otherwise), and for updates every ``--every``
(plancton-update.timer, or a crontab line). ``--label NAME`` gives the node labels that
overlays select it by; ``--trust FILE`` (git's allowed-signers file) makes it take only
commits signed by those ssh keys, now and at every update. ``--update`` fetches the latest
commit, checks its signature and validates it first, and reloads a running daemon; its
outcome is kept for ``planctonctl status`` and the metrics. ``--check DIR`` validates a
checkout as a whole, for the repository's own CI. ``--dryrun`` installs an empty configuration.
The default configuration that the install script wrote is replaced; any other only with
``--force``; either is kept beside the new one. A rejected configuration never touches the
config folder. git always runs with an argument list, never through a shell, and only
over the file, git, http(s) and ssh transports.

Exit codes: 0 done, 1 failure (one line naming the cause and the fix), 2 usage error.
"""

import argparse
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from plancton.cli.output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, duration
from plancton.cli.planctonctl import add_location_options, paths_from
from plancton.cli.planctonctl import main as planctonctl
from plancton.config import legacy_keys, loader, overlays, schema, units
from plancton.config.files import parse_yaml, read_file
from plancton.config.schema import HostFacts
from plancton.control.node import (
    check_signers,
    labels_path,
    node_facts,
    store_signers,
    trust_path,
    write_labels,
)
from plancton.control.paths import CONFIG_NAME, Paths, location_arguments, resolve
from plancton.control.pidfile import running_pid
from plancton.control.updates import (
    TakenRevision,
    UpdateFailed,
    UpdateOutcome,
    UpdateRecord,
    first_seen,
    forget_taken,
    read_rejected,
    read_taken,
    record_path,
    write_record,
    write_rejected,
    write_taken,
)
from plancton.core.rollout import rollout_offset
from plancton.errors import ConfigError, PlanctonError
from plancton.platform.host import host_facts, systemd_runs

GIT_TIMEOUT_SECONDS = 300
#: The longest random wait before an update (a day).
MAX_JITTER_SECONDS = 86400.0
GIT_PROTOCOLS = "file:git:http:https:ssh"
SYSTEMD_UNIT = "plancton.service"
INSTALLED_CRON_FILE = "/etc/cron.d/plancton"
SYSTEMD_FOLDER = "/etc/systemd/system"
UPDATE_SERVICE = "plancton-update.service"
UPDATE_TIMER = "plancton-update.timer"
#: The program in the packaged plancton-update.service, which the installed unit names anew.
PACKAGED_BOOTSTRAP = "/opt/plancton/venv/bin/plancton-bootstrap"
#: How often a node takes its repository's latest commit unless --every says otherwise.
DEFAULT_EVERY = "15m"
#: The first line of the default configuration that the install script writes, in every release.
DEFAULT_CONFIG_HEADING = b"# Plancton configuration (config.yaml in the config folder, /etc/plancton for root)."
EMPTY_CONFIG = (
    "# Plancton configuration installed by plancton-bootstrap --dryrun: every key has its default.\n"
    "# See them with: planctonctl config\n"
)

_GITHUB = re.compile(
    r"(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<repository>[A-Za-z0-9_.-]{1,100})(?::(?P<branch>\S+))?"
)
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}")
_URL = re.compile(r"(?:(?:https?|git|ssh|file)://[^\s]+|/[^\s]*|[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:[^\s]+)")


@dataclass(frozen=True)
class Source:
    """Where a configuration repository is: a git URL and the branch (None: its default)."""

    url: str
    branch: str | None = None


def parse_source(text: str, branch: str | None = None) -> Source:
    """Given ``USER/REPO[:BRANCH]`` or a git URL or absolute path, and an optional branch,
    return the repository to clone.

    Raises:
        PlanctonError: the text is neither a GitHub shorthand nor a git URL we accept, or the
            branch is not a plain branch name.
    """
    shorthand = _GITHUB.fullmatch(text)
    if shorthand is not None and shorthand["repository"].strip(".") and ".." not in shorthand["repository"]:
        if shorthand["branch"] is not None and branch is not None:
            raise PlanctonError(f"{text}: give the branch either after the colon or with --branch, not both")
        url = f"https://github.com/{shorthand['owner']}/{shorthand['repository']}.git"
        return Source(url, _checked_branch(shorthand["branch"] or branch))
    if _URL.fullmatch(text) is None or any(ord(character) < 32 for character in text):
        raise PlanctonError(
            f"{text!r} is not a repository: give USER/REPO[:BRANCH] for GitHub, or a git URL "
            "(https://, ssh://, git://, file://, user@host:path) or an absolute path"
        )
    return Source(text, _checked_branch(branch))


def _checked_branch(branch: str | None) -> str | None:
    if branch is None:
        return None
    if _BRANCH.fullmatch(branch) is None or ".." in branch or branch.endswith((".lock", "/")):
        raise PlanctonError(f"{branch!r} is not a branch name (letters, digits, '_', '.', '-' and '/')")
    return branch


def with_boot_entry(crontab: str, entry: str, marker: str) -> str:
    """Given a crontab's text, an @reboot line and the comment that marks it, return the
    crontab with that line in place of any earlier line carrying the same marker.
    """
    tagged = f"{entry}  {marker}"
    kept = [line for line in crontab.splitlines() if not line.endswith(marker)]
    return "\n".join([*kept, tagged]) + "\n"


# -- git ------------------------------------------------------------------------------------


def git_output(arguments: list[str], folder: str | None = None) -> bytes:
    """Run git with these arguments (never through a shell) and return its raw output.

    Raises:
        PlanctonError: git is missing, fails or does not finish in time.
    """
    environment = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password nobody types
        "GIT_ALLOW_PROTOCOL": GIT_PROTOCOLS,
        "LC_ALL": "C",
    }
    try:
        done = subprocess.run(
            ["git", *arguments],
            cwd=folder,
            env=environment,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise PlanctonError("git is not installed: install it (apt-get install git, or dnf install git)") from None
    except subprocess.TimeoutExpired:
        raise PlanctonError(f"git {arguments[0]} did not finish within {GIT_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise PlanctonError(f"git {arguments[0]} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")
    return done.stdout


def git(arguments: list[str], folder: str | None = None) -> str:
    """Run git like :func:`git_output` and return its output as text, stripped."""
    return git_output(arguments, folder).decode(errors="replace").strip()


# -- the configuration folder ---------------------------------------------------------------


def say(message: str) -> None:
    """Print a line for the user on stdout."""
    print(message, flush=True)


def validate(path: str, label: str, facts: HostFacts) -> schema.Config:
    """Validate a configuration file that ``label`` names for the user, with the overlays
    beside it that select a node of these facts; return it.

    Raises:
        ConfigError: the file is missing, a symlink, or invalid, or an overlay is (every
            problem listed).
    """
    if os.path.islink(path):
        raise ConfigError(["is a symbolic link; a configuration repository holds a plain config.yaml"], label)
    if not os.path.isfile(path):
        raise ConfigError([f"no {CONFIG_NAME} at the top of the repository"], label)
    try:
        config, warnings = loader.load(path, facts)
    except ConfigError as error:
        raise ConfigError(error.problems, label) from None
    for warning in warnings:
        say(f"warning: {warning.replace(path, label)}")
    for note in legacy_keys.changed_meanings(config):
        say(f"note: {note}")
    return config


def holds_configuration(folder: str) -> bool:
    """Return whether a config folder holds a configuration (or anything else) already."""
    if os.path.isdir(folder) and not os.path.islink(folder):
        return bool(os.listdir(folder))
    return os.path.lexists(folder)


def packaged_defaults() -> list[Path]:
    """Return where the default configuration that the install script writes may be found:
    installed under share/plancton beside the program, or in the checkout it runs from."""
    checkout = Path(__file__).resolve().parents[2]
    return [
        Path(sys.prefix, "share", "plancton", CONFIG_NAME),
        Path(sysconfig.get_path("data"), "share", "plancton", CONFIG_NAME),
        checkout / "etc" / CONFIG_NAME,
    ]


def is_install_default(folder: str) -> bool:
    """Given a config folder, return whether it holds nothing but the default configuration
    that the install script wrote: the same content as this release's, or (an earlier
    release's) the default's first line and not one key set. Never raises.
    """
    try:
        if os.path.islink(folder) or os.listdir(folder) != [CONFIG_NAME]:
            return False
        content = read_file(os.path.join(folder, CONFIG_NAME))
        if content is None:
            return False
        for default in packaged_defaults():
            if default.is_file() and default.read_bytes() == content:
                return True
        return content.startswith(DEFAULT_CONFIG_HEADING) and not parse_yaml(content, CONFIG_NAME)
    except (OSError, PlanctonError):
        return False


def refuse_existing(paths: Paths, force: bool) -> None:
    """Refuse to replace an existing configuration unless it is still the install script's
    default, or ``force`` is true.

    Raises:
        PlanctonError: the config folder holds anything else and ``force`` is false.
    """
    if not holds_configuration(paths.confdir) or force or is_install_default(paths.confdir):
        return
    raise PlanctonError(
        f"{paths.confdir} already holds a configuration that is not the default one: replace it with "
        "--force (a copy is kept beside it), or pull the latest commit of its repository with --update"
    )


def backup_name(folder: str, now: float) -> str:
    """Given a config folder and the time, return a free name beside it for its copy."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate = f"{folder}.replaced-{stamp}"
    suffix = 1
    while os.path.lexists(candidate):
        candidate, suffix = f"{folder}.replaced-{stamp}-{suffix}", suffix + 1
    return candidate


def staging_folder(paths: Paths) -> str:
    """Return a new private folder beside the config folder, on the same file system."""
    parent = os.path.dirname(paths.confdir)
    os.makedirs(parent, mode=0o700 if paths.user_mode else 0o755, exist_ok=True)
    return tempfile.mkdtemp(prefix=".plancton-bootstrap-", dir=parent)


def put_in_place(new: str, paths: Paths, staging: str) -> None:
    """Make the folder ``new`` the config folder; the previous one is kept beside it under
    :func:`backup_name` (said to the user), and comes back if the swap fails.
    """
    os.chmod(new, 0o700 if paths.user_mode else 0o755)
    previous = os.path.join(staging, "previous")
    had_previous = os.path.lexists(paths.confdir)
    default = had_previous and is_install_default(paths.confdir)
    if had_previous:
        os.rename(paths.confdir, previous)
    try:
        os.rename(new, paths.confdir)
    except OSError:
        if had_previous:
            os.rename(previous, paths.confdir)
        raise
    if had_previous:
        kept = backup_name(paths.confdir, time.time())
        os.rename(previous, kept)
        what = "the default configuration that install wrote" if default else "the previous configuration"
        say(f"replaced {what}; it is kept in {kept}")


def clone(source: Source, paths: Paths, force: bool, facts: HostFacts, signers: str | None) -> schema.Config:
    """Clone the repository into the config folder once its configuration proved valid on a
    node of these facts, and its commit signed by a key of the allowed-signers file ``signers``
    when one is given.

    Raises:
        PlanctonError: a configuration is there and ``force`` is false, or git fails.
        UpdateFailed: the commit is not signed by a trusted key; the config folder is untouched.
        ConfigError: the repository's configuration is invalid; the config folder is untouched.
    """
    refuse_existing(paths, force)
    staging = staging_folder(paths)
    try:
        checkout = os.path.join(staging, "conf")
        branch = ["--branch", source.branch] if source.branch else []
        git(["clone", "--quiet", "--no-recurse-submodules", *branch, "--", source.url, checkout])
        if signers is not None:
            check_signed(checkout, git(["rev-parse", "HEAD"], checkout), signers)
        config = validate(os.path.join(checkout, CONFIG_NAME), f"{source.url}: {CONFIG_NAME}", facts)
        commit = git(["rev-parse", "--short=12", "HEAD"], checkout)
        put_in_place(checkout, paths, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"cloned {source.url} (commit {commit}) into {paths.confdir}; configuration valid (revision {config.revision})")
    return config


def install_empty(paths: Paths, force: bool) -> None:
    """Make the config folder hold only an empty config.yaml (every key at its default).

    Raises:
        PlanctonError: a configuration is there and ``force`` is false.
    """
    refuse_existing(paths, force)
    staging = staging_folder(paths)
    try:
        folder = os.path.join(staging, "conf")
        os.mkdir(folder)
        with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as handle:
            handle.write(EMPTY_CONFIG)
        put_in_place(folder, paths, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"installed an empty configuration in {paths.confdir}: every key has its default")


def update(paths: Paths) -> bool:
    """Fetch the config folder's repository and move to its latest commit, once that commit
    proved signed by a trusted key (when the node keeps an allowed-signers file), its
    configuration (config.yaml and the overlays that select this node) valid, and this node's
    turn in its rollout come; a commit the daemon rejected is gone back from first, and never
    taken again. Record the outcome for ``planctonctl status`` and the metrics. Return whether
    the configuration changed.

    Raises:
        PlanctonError: the config folder is not a git checkout, or git fails.
        UpdateFailed: the repository cannot be fetched, or its latest commit is not signed by
            a trusted key; the folder stays as it was.
        ConfigError: the latest commit's configuration is invalid; the folder stays as it was.
    """
    folder = paths.confdir
    if not os.path.isdir(os.path.join(folder, ".git")):
        raise PlanctonError(f"{folder} is not a git checkout: set it up first with plancton-bootstrap USER/REPO")
    current = git(["rev-parse", "HEAD"], folder)
    if current == read_rejected(paths) and read_taken(paths) is not None:
        return rollback(paths)  # the daemon rejected it, and could not go back itself
    latest = fetch_latest(paths)
    if latest == current:
        record(paths, UpdateOutcome.CURRENT, latest, "at the latest commit")
        say(f"{folder} is at the latest commit ({current[:12]}): nothing to update")
        return False
    if latest == read_rejected(paths):
        message = (
            f"commit {latest[:12]} was rolled back on this node (its pilots could not start under it); "
            "it is not taken again: push a newer commit"
        )
        record(paths, UpdateOutcome.ROLLED_BACK, latest, message)
        say(message)
        return False
    try:
        facts = node_facts(paths)
        if os.path.isfile(trust_path(paths)):
            check_signed(folder, latest, trust_path(paths))
        label = f"{CONFIG_NAME} of commit {latest[:12]}"
        with tempfile.TemporaryDirectory(prefix="plancton-bootstrap-") as scratch:
            export_configuration(folder, latest, scratch, label)
            config = validate(os.path.join(scratch, CONFIG_NAME), label, facts)
    except UpdateFailed as error:
        record(paths, error.outcome, latest, str(error))
        raise
    except ConfigError as error:
        record(paths, UpdateOutcome.INVALID, latest, f"commit {latest[:12]} rejected: {'; '.join(error.problems)}")
        raise
    if not my_turn(paths, latest, config.rollout.window, facts.hostname):
        return False
    before = running_revision(folder, facts)
    git(["merge", "--ff-only", "--quiet", latest], folder)
    if config.revision != before:
        # a commit that changes nothing for this node has nothing to prove
        write_taken(paths, TakenRevision(latest, current, config.revision, time.time(), config.rollout.watch))
    record(paths, UpdateOutcome.UPDATED, latest, f"updated to commit {latest[:12]}")
    say(f"{folder} updated to commit {latest[:12]}; configuration valid (revision {config.revision})")
    return True


def my_turn(paths: Paths, commit: str, window: float, host_name: str) -> bool:
    """Return whether this node takes a commit now: at once without a rollout window, else once
    its offset into the window (from its host name) has passed since it first saw the commit;
    record that it waits otherwise."""
    if not window:
        return True
    now = time.time()
    due = first_seen(paths, commit, now) + rollout_offset(host_name, window)
    if now >= due:
        return True
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(due))
    message = f"commit {commit[:12]} rolls out over {duration(window)}: this node takes it at {when}"
    record(paths, UpdateOutcome.WAITING, commit, message)
    say(message)
    return False


def running_revision(folder: str, facts: HostFacts) -> str | None:
    """Return the configuration revision the checkout gives this node now (None: invalid)."""
    try:
        return loader.load(os.path.join(folder, CONFIG_NAME), facts)[0].revision
    except ConfigError:
        return None


def rollback(paths: Paths) -> bool:
    """Go back from the commit the last update took to the one before it, and never take it
    again (the daemon asks for this when its pilots cannot start under it). Return whether the
    checkout moved.

    Raises:
        PlanctonError: no update is being watched, or git fails.
    """
    taken = read_taken(paths)
    if taken is None:
        raise PlanctonError("no revision taken by an update is watched: nothing to roll back")
    folder = paths.confdir
    if git(["rev-parse", "HEAD"], folder) != taken.commit:
        forget_taken(paths)
        say(f"{folder} is no longer at commit {taken.commit[:12]}: nothing to roll back")
        return False
    git(["reset", "--keep", "--quiet", taken.previous], folder)
    write_rejected(paths, taken.commit)
    forget_taken(paths)
    message = (
        f"commit {taken.commit[:12]} rolled back to {taken.previous[:12]}: pilots could not start under it, "
        "where they ran before; it is not taken again: push a newer commit"
    )
    record(paths, UpdateOutcome.ROLLED_BACK, taken.commit, message)
    say(message)
    return True


def fetch_latest(paths: Paths) -> str:
    """Fetch the config folder's repository; return the latest commit of its branch.

    Raises:
        UpdateFailed: the repository cannot be fetched (recorded as unreachable).
    """
    try:
        git(["fetch", "--quiet", "origin"], paths.confdir)
    except PlanctonError as error:
        message = f"cannot fetch the configuration repository ({error}); nothing changed, the next update tries again"
        record(paths, UpdateOutcome.UNREACHABLE, "", message)
        raise UpdateFailed(UpdateOutcome.UNREACHABLE, "", message) from None
    return git(["rev-parse", "@{upstream}"], paths.confdir)


def record(paths: Paths, outcome: UpdateOutcome, commit: str, message: str) -> None:
    """Keep the outcome of this update for ``planctonctl status`` and the metrics; a state
    folder that cannot be written is told, not fatal."""
    try:
        write_record(paths, UpdateRecord(outcome, time.time(), commit, message))
    except OSError as error:
        say(f"warning: cannot record the update's outcome in {record_path(paths)}: {error.strerror}")


#: What git's %G? says of a commit's signature, for people (G, a good signature by a listed key, passes).
SIGNATURE_PROBLEMS = {
    "N": "it is not signed; sign it with a trusted ssh key (git -c gpg.format=ssh commit -S)",
    "U": "it is signed by key {key}, which the node's allowed signers ({signers}) do not list; "
    "sign it with a trusted key, or add that key to the allowed signers",
    "B": "its signature does not match its content (changed after signing); sign it again with a trusted key",
    "E": "its signature cannot be checked (is ssh-keygen installed? apt-get install openssh-client)",
    "X": "its signature has expired; sign it again with a trusted key",
    "Y": "it is signed by an expired key; sign it again with a trusted key",
    "R": "it is signed by a revoked key; sign it again with a trusted key",
}


def check_signed(folder: str, commit: str, signers: str) -> None:
    """Check that a commit is signed by a key of the allowed-signers file ``signers``.

    Raises:
        UpdateFailed: naming the commit and why it is refused.
    """
    allowed = ["-c", f"gpg.ssh.allowedSignersFile={signers}"]
    verdict, _, key = git([*allowed, "log", "-1", "--format=%G?%x00%GK", commit], folder).partition("\0")
    if verdict == "G":
        return
    problem = SIGNATURE_PROBLEMS.get(verdict, f"its signature is not good (git says {verdict!r})")
    raise UpdateFailed(
        UpdateOutcome.UNTRUSTED,
        commit,
        f"refused commit {commit[:12]}: {problem.format(key=key, signers=signers)}; the configuration is unchanged",
    )


def export_configuration(folder: str, commit: str, target: str, label: str) -> None:
    """Write a commit's config.yaml and its overlays (``hosts/*``) from the checkout ``folder``
    into the folder ``target``, to be validated before the checkout moves.

    Raises:
        PlanctonError: git fails.
        ConfigError: naming ``label``: no config.yaml, or one of them is not a plain file.
    """
    listing = git_output(["ls-tree", "-r", "-z", "--full-tree", commit, "--", CONFIG_NAME, loader.HOSTS_FOLDER], folder)
    entries = [entry.decode(errors="replace").split("\t", 1) for entry in listing.split(b"\0") if entry]
    names = [name for _, name in entries]
    if CONFIG_NAME not in names:
        raise ConfigError([f"no {CONFIG_NAME} at the top of the repository"], label)
    os.mkdir(os.path.join(target, loader.HOSTS_FOLDER))
    for fields, name in entries:
        mode, _, blob = fields.split()
        if name == loader.HOSTS_FOLDER:
            raise ConfigError([f"{name} is not a folder; overlays live in a plain folder {name}/"], label)
        if name != CONFIG_NAME and os.path.dirname(name) != loader.HOSTS_FOLDER:
            continue  # deeper than hosts/NAME: not an overlay
        if mode not in ("100644", "100755"):
            raise ConfigError([f"{name} is not a plain file; a configuration repository holds plain files"], label)
        with open(os.path.join(target, name), "wb") as handle:
            handle.write(git_output(["cat-file", "blob", blob], folder))


def check_checkout(folder: str) -> int:
    """Validate a checkout of a configuration repository as a whole (see
    :func:`plancton.config.loader.check_all`), printing the outcome; return the exit code.

    Raises:
        ConfigError: the checkout is invalid (every problem listed).
    """
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path) or os.path.islink(path):
        raise ConfigError([f"no plain {CONFIG_NAME} at the top of the checkout"], folder)
    facts = host_facts()
    names, warnings = loader.check_all(path, facts, time.time())
    for warning in warnings:
        say(f"warning: {warning}")
    merged = f", alone and with each overlay over it ({', '.join(names)})," if names else ""
    say(f"{folder}: valid: {CONFIG_NAME}{merged} on a host of {facts.ncpus} CPUs")
    return EXIT_OK


# -- start at boot, reload now --------------------------------------------------------------


def planctonctl_command() -> list[str]:
    """Return the command that runs this installation's planctonctl."""
    return sibling_command("planctonctl", "plancton.cli.planctonctl")


def sibling_command(program: str, module: str) -> list[str]:
    """Return the command that runs one of this installation's programs (or its module)."""
    beside = os.path.join(os.path.dirname(sys.executable), program)
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which(program)
    return [found] if found else [sys.executable, "-m", module]


def arrange_boot(paths: Paths) -> None:
    """Make Plancton start at boot with these folders.

    Raises:
        PlanctonError: the boot entry cannot be written.
    """
    if not paths.user_mode and paths.confdir == resolve(user_mode=False).confdir:
        if systemd_runs():
            enable_unit()
            return
        if os.path.exists(INSTALLED_CRON_FILE):
            say(f"Plancton starts at boot through {INSTALLED_CRON_FILE}")
            return
    command = [*planctonctl_command(), *location_arguments(paths), "start"]
    put_in_crontab(paths, "@reboot", command, f"# plancton-bootstrap {paths.confdir}")
    say("Plancton starts at boot through this user's crontab (@reboot)")


def put_in_crontab(paths: Paths, schedule: str, command: list[str], marker: str) -> None:
    """Put a line running this command on this schedule in this user's crontab, in place of
    any earlier line with the same marker.

    Raises:
        PlanctonError: the folders make a line cron would misread, or crontab fails.
    """
    entry = f"{schedule} {shlex.join(command)}"
    if "%" in entry or "\n" in entry:
        raise PlanctonError(f"cannot run {paths.confdir} from crontab: its folders may not contain % or newlines")
    current = crontab(["-l"], missing_ok=True)
    updated = with_boot_entry(current, entry, marker)
    if updated != current:
        crontab(["-"], text=updated)


# -- updates at intervals ---------------------------------------------------------------------


def parse_every(text: str) -> float:
    """Given the interval of updates as text such as "15m" or "1h", return seconds.

    Raises:
        PlanctonError: not a duration that divides an hour (in whole minutes) or a day (in
            whole hours), which cron can keep as well as systemd.
    """
    try:
        seconds = units.parse_duration(text)
    except ValueError:
        seconds = 0.0
    if cron_schedule(seconds) is None:
        raise PlanctonError(
            f"--every {text}: expected whole minutes that divide an hour or whole hours that divide a day, "
            "such as 5m, 15m, 30m, 1h, 6h or 24h"
        )
    return seconds


def cron_schedule(seconds: float) -> str | None:
    """Given an interval in seconds, return cron's schedule of it, or None when cron cannot
    keep it (see :func:`parse_every`)."""
    minutes, hours = seconds / 60, seconds / 3600
    if minutes.is_integer() and 1 <= minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes:.0f} * * * *"
    if hours.is_integer() and 1 <= hours <= 24 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else "0 0 * * *" if hours == 24 else f"0 */{hours:.0f} * * *"
    return None


def timer_dropin(seconds: float) -> str:
    """Given the interval of updates, return the drop-in of plancton-update.timer that sets it."""
    return (
        "# Written by plancton-bootstrap --every: the interval of configuration updates.\n"
        f"[Timer]\nOnUnitInactiveSec=\nOnUnitInactiveSec={seconds:g}s\nRandomizedDelaySec={seconds:g}s\n"
    )


def arrange_updates(paths: Paths, seconds: float) -> None:
    """Make the node take its repository's latest commit every ``seconds``, at a random point
    of each interval: plancton-update.timer where systemd runs and the folders are root's,
    a crontab line that runs plancton-bootstrap --update --jitter otherwise.

    Raises:
        PlanctonError: the timer or the crontab line cannot be installed.
    """
    bootstrap_command = sibling_command("plancton-bootstrap", "plancton.cli.bootstrap")
    if not paths.user_mode and paths.confdir == resolve(user_mode=False).confdir and systemd_runs():
        install_timer(bootstrap_command, seconds)
        say(f"updates every {seconds:g} s through {UPDATE_TIMER}, each at a random point of its interval")
        return
    command = [*bootstrap_command, "--update", "--jitter", f"{seconds:g}", *location_arguments(paths)]
    schedule = cron_schedule(seconds)
    assert schedule is not None  # parse_every refused the others
    put_in_crontab(paths, schedule, command, f"# plancton-bootstrap update {paths.confdir}")
    say(f"updates every {seconds:g} s through this user's crontab, each after a random wait (--jitter)")


def install_timer(bootstrap_command: list[str], seconds: float) -> None:
    """Write plancton-update.service (running this plancton-bootstrap) and its timer, with the
    interval in a drop-in, and enable the timer.

    Raises:
        PlanctonError: a unit is not packaged, or systemctl fails.
    """
    for name, text in update_units(bootstrap_command, seconds).items():
        path = os.path.join(SYSTEMD_FOLDER, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    systemctl(["daemon-reload"])
    systemctl(["enable", "--now", UPDATE_TIMER])


def update_units(bootstrap_command: list[str], seconds: float) -> dict[str, str]:
    """Given the command of plancton-bootstrap and the interval of updates, return the files
    of plancton-update.timer and its service, by their paths under /etc/systemd/system.

    Raises:
        PlanctonError: a unit is not packaged.
    """
    service = packaged_file(UPDATE_SERVICE).read_text(encoding="utf-8")
    return {
        UPDATE_SERVICE: service.replace(
            f"ExecStart={PACKAGED_BOOTSTRAP} --update", f"ExecStart={shlex.join([*bootstrap_command, '--update'])}"
        ),
        UPDATE_TIMER: packaged_file(UPDATE_TIMER).read_text(encoding="utf-8"),
        f"{UPDATE_TIMER}.d/every.conf": timer_dropin(seconds),
    }


def packaged_file(name: str) -> Path:
    """Return a file Plancton ships in share/plancton (or its checkout's etc/).

    Raises:
        PlanctonError: this installation lacks it.
    """
    for candidate in packaged_defaults():
        path = candidate.with_name(name)
        if path.is_file():
            return path
    raise PlanctonError(f"{name} is not installed with Plancton: reinstall it with its install script")


def systemctl(arguments: list[str]) -> None:
    """Run systemctl with these arguments.

    Raises:
        PlanctonError: it fails.
    """
    done = subprocess.run(["systemctl", *arguments], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise PlanctonError(f"systemctl {' '.join(arguments)} failed: {done.stderr.strip()}")


def crontab(arguments: list[str], text: str | None = None, missing_ok: bool = False) -> str:
    """Run crontab for this user and return its output ("" when there is no crontab yet).

    Raises:
        PlanctonError: crontab is missing or fails.
    """
    try:
        done = subprocess.run(
            ["crontab", *arguments], input=text or "", capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise PlanctonError(
            "crontab is not installed: install cron (apt-get install cron, or dnf install cronie)"
        ) from None
    if done.returncode != 0:
        if missing_ok and "no crontab" in done.stderr:
            return ""
        raise PlanctonError(f"crontab {' '.join(arguments)} failed: {done.stderr.strip()}")
    return done.stdout


def enable_unit() -> None:
    """Enable Plancton's systemd unit.

    Raises:
        PlanctonError: the unit is not installed, or systemctl fails.
    """
    done = subprocess.run(
        ["systemctl", "enable", SYSTEMD_UNIT], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise PlanctonError(
            f"cannot enable {SYSTEMD_UNIT} ({done.stderr.strip()}): install it with Plancton's install script"
        )
    say(f"Plancton starts at boot through {SYSTEMD_UNIT}")


def reload_daemon(paths: Paths) -> int:
    """Make a running daemon re-read its configuration; return the exit code."""
    if running_pid(paths.pidfile) is None:
        say("Plancton is not running: the configuration applies when it starts (planctonctl start)")
        return EXIT_OK
    return planctonctl([*location_arguments(paths), "reload"])


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of plancton-bootstrap's command line."""
    parser = argparse.ArgumentParser(
        prog="plancton-bootstrap",
        description="Set up Plancton's configuration from a git repository and start Plancton at boot.",
    )
    parser.add_argument(
        "repository", nargs="?", help="USER/REPO[:BRANCH] on GitHub, or a git URL or absolute path of the repository"
    )
    parser.add_argument("--branch", metavar="NAME", help="the branch to clone (default: the repository's own)")
    parser.add_argument("--force", action="store_true", help="replace an existing configuration")
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--update", action="store_true", help="pull the latest commit, validate it and reload the daemon"
    )
    action.add_argument("--dryrun", action="store_true", help="install an empty configuration (every key's default)")
    action.add_argument(
        "--rollback",
        action="store_true",
        help="go back to the commit before the last update and never take it again (the daemon does it "
        "when pilots cannot start under a new revision)",
    )
    action.add_argument(
        "--check",
        metavar="DIR",
        help="validate a checkout of a configuration repository as a whole (for the repository's own CI)",
    )
    parser.add_argument(
        "--trust",
        metavar="FILE",
        help="git's allowed-signers file: take only commits signed by its ssh keys, now and at every update",
    )
    parser.add_argument(
        "--every",
        metavar="DURATION",
        help=f"with a repository: take its latest commit this often, such as 5m or 1h (default {DEFAULT_EVERY})",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --update: wait a random time up to this long first, so that the nodes of a farm spread out",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME",
        help="a label of this node, which overlays may select it by (repeat for more; replaces its labels)",
    )
    add_location_options(parser, None)
    return parser


def run(args: argparse.Namespace) -> int:
    """Carry out the parsed command line; return the exit code.

    Raises:
        PlanctonError, ConfigError: reported by :func:`main`.
    """
    if args.check:
        return check_checkout(args.check)
    paths = paths_from(args)
    if not paths.user_mode:
        os.umask(0o022)  # the daemon's own user must be able to read what root writes here
    if args.rollback:
        return reload_daemon(paths) if rollback(paths) else EXIT_OK
    if args.update:
        if args.jitter:
            time.sleep(random.uniform(0, args.jitter))  # nodes of one timer spread their fetches
        return reload_daemon(paths) if update(paths) else EXIT_OK
    labels = parsed_labels(args.label) if args.label else node_facts(paths).labels
    signers = read_signers(args.trust) if args.trust else None
    if args.dryrun:
        install_empty(paths, args.force)
    else:
        source = parse_source(args.repository, args.branch)
        every = parse_every(args.every or DEFAULT_EVERY)
        clone(source, paths, args.force, host_facts(labels), args.trust)
        keep_trust(paths, source, signers)
        arrange_updates(paths, every)
    if args.label:
        write_labels(paths, labels)
        say(f"this node's labels: {', '.join(sorted(labels))} (in {labels_path(paths)})")
    arrange_boot(paths)
    return reload_daemon(paths)


def read_signers(path: str) -> str:
    """Given an allowed-signers file, return its text once it proved to list keys.

    Raises:
        PlanctonError: the file cannot be read or lists no key.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(1024 * 1024)
    except (OSError, UnicodeDecodeError) as error:
        raise PlanctonError(f"--trust {path}: cannot read it ({error}); give git's allowed-signers file") from None
    check_signers(text, path)
    return text


def keep_trust(paths: Paths, source: Source, signers: str | None) -> None:
    """Keep the allowed signers for later updates, or say what updates will take without them."""
    if signers is not None:
        say(f"updates take only commits signed by a key of {store_signers(paths, signers)}")
    elif os.path.isfile(trust_path(paths)):
        say(f"updates take only commits signed by a key of {trust_path(paths)}, kept from before")
    else:
        say(
            f"warning: anyone who can push to {source.url} can run any image, with any bind, on this node; "
            "give --trust FILE (git's allowed-signers file) to take only commits signed by its keys"
        )


def parsed_labels(given: list[str]) -> frozenset[str]:
    """Given the labels of the command line, return them.

    Raises:
        PlanctonError: a label is malformed.
    """
    try:
        return frozenset(overlays.parse_label(label) for label in given)
    except ValueError as error:
        raise PlanctonError(f"--label: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """Run plancton-bootstrap with the given arguments; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (
        (args.repository is None) != bool(args.update or args.dryrun or args.check or args.rollback)
        or (args.branch and args.repository is None)
        or ((args.label or args.trust) and (args.update or args.check or args.rollback))
        or (args.trust and args.dryrun)
        or (args.jitter and not args.update)
        or (args.every and args.repository is None)
        or not 0 <= args.jitter <= MAX_JITTER_SECONDS
    ):
        parser.print_usage(sys.stderr)
        print(
            "plancton-bootstrap: give a repository (with its --branch, --label and --trust), "
            f"or --update (with --jitter up to {MAX_JITTER_SECONDS:g} s), or --dryrun (with --label), or --check DIR",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return run(args)
    except ConfigError as error:
        print(f"plancton-bootstrap: rejected, the configuration is unchanged: {error.describe()}", file=sys.stderr)
    except (PlanctonError, OSError) as error:
        print(f"plancton-bootstrap: {error}", file=sys.stderr)
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
