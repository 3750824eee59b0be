"""``plancton-bootstrap``: a cluster node's configuration from a git repository.

``plancton-bootstrap USER/REPO[:BRANCH]`` (GitHub) or ``plancton-bootstrap URL`` clones the
repository into the config folder, validates its ``config.yaml`` before accepting it, and
arranges for Plancton to start at boot (the systemd unit where systemd runs and the folders
are root's, a crontab @reboot line otherwise). ``--update`` pulls the latest commit, again
validated first, and reloads a running daemon; ``--dryrun`` installs an empty configuration.
The default configuration that the install script wrote is replaced; any other only with
``--force``; either is kept beside the new one. A rejected configuration never touches the
config folder. git always runs with an argument list, never through a shell, and only
over the file, git, http(s) and ssh transports.

Exit codes: 0 done, 1 failure (one line naming the cause and the fix), 2 usage error.
"""

import argparse
import os
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

from plancton.cli.output import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from plancton.cli.planctonctl import add_location_options, location_arguments, paths_from
from plancton.cli.planctonctl import main as planctonctl
from plancton.config import legacy_keys, loader, schema
from plancton.config.files import parse_yaml, read_file
from plancton.control.paths import CONFIG_NAME, Paths, resolve
from plancton.control.pidfile import running_pid
from plancton.errors import ConfigError, PlanctonError
from plancton.platform.host import host_facts

GIT_TIMEOUT_SECONDS = 300
GIT_PROTOCOLS = "file:git:http:https:ssh"
SYSTEMD_UNIT = "plancton.service"
INSTALLED_CRON_FILE = "/etc/cron.d/plancton"
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


def validate(path: str, label: str) -> schema.Config:
    """Validate a configuration file that ``label`` names for the user; return it.

    Raises:
        ConfigError: the file is missing, a symlink, or invalid (every problem listed).
    """
    if os.path.islink(path):
        raise ConfigError(["is a symbolic link; a configuration repository holds a plain config.yaml"], label)
    if not os.path.isfile(path):
        raise ConfigError([f"no {CONFIG_NAME} at the top of the repository"], label)
    try:
        config, warnings = loader.load(path, host_facts())
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


def clone(source: Source, paths: Paths, force: bool) -> schema.Config:
    """Clone the repository into the config folder once its config.yaml proved valid.

    Raises:
        PlanctonError: a configuration is there and ``force`` is false, or git fails.
        ConfigError: the repository's config.yaml is invalid; the config folder is untouched.
    """
    refuse_existing(paths, force)
    staging = staging_folder(paths)
    try:
        checkout = os.path.join(staging, "conf")
        branch = ["--branch", source.branch] if source.branch else []
        git(["clone", "--quiet", "--no-recurse-submodules", *branch, "--", source.url, checkout])
        config = validate(os.path.join(checkout, CONFIG_NAME), f"{source.url}: {CONFIG_NAME}")
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
    """Fetch the config folder's repository and move to its latest commit, once that commit's
    config.yaml proved valid. Return whether the configuration changed.

    Raises:
        PlanctonError: the config folder is not a git checkout, or git fails.
        ConfigError: the latest commit's config.yaml is invalid; the folder stays as it was.
    """
    folder = paths.confdir
    if not os.path.isdir(os.path.join(folder, ".git")):
        raise PlanctonError(f"{folder} is not a git checkout: set it up first with plancton-bootstrap USER/REPO")
    current = git(["rev-parse", "HEAD"], folder)
    git(["fetch", "--quiet", "origin"], folder)
    latest = git(["rev-parse", "@{upstream}"], folder)
    if latest == current:
        say(f"{folder} is at the latest commit ({current[:12]}): nothing to update")
        return False
    label = f"{CONFIG_NAME} of commit {latest[:12]}"
    listing = git(["ls-tree", latest, "--", CONFIG_NAME], folder).split()
    if not listing:
        raise ConfigError([f"no {CONFIG_NAME} at the top of the repository"], label)
    if listing[0] != "100644" and listing[0] != "100755":
        raise ConfigError(["is not a plain file; a configuration repository holds a plain config.yaml"], label)
    with tempfile.TemporaryDirectory(prefix="plancton-bootstrap-") as scratch:
        candidate = os.path.join(scratch, CONFIG_NAME)
        with open(candidate, "wb") as handle:
            handle.write(git_output(["cat-file", "blob", listing[2]], folder))
        config = validate(candidate, label)
    git(["merge", "--ff-only", "--quiet", latest], folder)
    say(f"{folder} updated to commit {latest[:12]}; configuration valid (revision {config.revision})")
    return True


# -- start at boot, reload now --------------------------------------------------------------


def planctonctl_command() -> list[str]:
    """Return the command that runs this installation's planctonctl."""
    beside = os.path.join(os.path.dirname(sys.executable), "planctonctl")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("planctonctl")
    return [found] if found else [sys.executable, "-m", "plancton.cli.planctonctl"]


def systemd_runs() -> bool:
    """Return whether systemd manages this host."""
    return os.path.isdir("/run/systemd/system")


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
    entry = "@reboot " + shlex.join(command)
    if "%" in entry or "\n" in entry:
        raise PlanctonError(f"cannot start {paths.confdir} from crontab: its folders may not contain % or newlines")
    current = crontab(["-l"], missing_ok=True)
    updated = with_boot_entry(current, entry, f"# plancton-bootstrap {paths.confdir}")
    if updated != current:
        crontab(["-"], text=updated)
    say("Plancton starts at boot through this user's crontab (@reboot)")


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
    add_location_options(parser, None)
    return parser


def run(args: argparse.Namespace) -> int:
    """Carry out the parsed command line; return the exit code.

    Raises:
        PlanctonError, ConfigError: reported by :func:`main`.
    """
    paths = paths_from(args)
    if not paths.user_mode:
        os.umask(0o022)  # the daemon's own user must be able to read what root writes here
    if args.update:
        return reload_daemon(paths) if update(paths) else EXIT_OK
    if args.dryrun:
        install_empty(paths, args.force)
    else:
        clone(parse_source(args.repository, args.branch), paths, args.force)
    arrange_boot(paths)
    return reload_daemon(paths)


def main(argv: list[str] | None = None) -> int:
    """Run plancton-bootstrap with the given arguments; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.repository is None) != (args.update or args.dryrun) or (args.branch and args.repository is None):
        parser.print_usage(sys.stderr)
        print("plancton-bootstrap: give a repository (with its --branch), or --update, or --dryrun", file=sys.stderr)
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
