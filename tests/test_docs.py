"""The docs show only what exists: every command line in a shell block of README.md and
docs/*.md runs here in a form that acts on nothing, every YAML block made of Plancton's keys
passes ``planctonctl check-config``, docs/configuration.md lists every key, every relative
link leads to a file and heading that exist, the README links every page of docs/, and
every file of the repository that a page names in backquotes (``tests/...``) is there.

How a command line's program is run:

- ``planctonctl``, ``plancton-bootstrap``, ``python -m MODULE`` and ``python SCRIPT.py`` of
  this repository: the real entry point with the line's arguments, stopped as soon as its
  argument parser has accepted them, so that nothing acts; then with ``--help`` added.
- ``bench/run``: ``python -m bench`` (what the script runs) with the line's arguments and
  ``--show``, which checks the scenario names and prints the last results instead of
  measuring; the script itself, which may install matplotlib, is only checked by ``sh -n``.
- ``./install``, ``tests/vm/run`` and ``tests/farm/run``: the line's arguments, then
  ``--help``; these scripts read their arguments in order and stop at ``--help``, so a wrong
  option fails first. As
  root, ``./install`` also runs with ``--dry-run``, which only prints what it would change.
- ``./tests/run``: never run (it installs packages and runs this suite); it is checked by
  ``bash -n``, and its arguments, which go to pytest, are given to pytest in an empty folder.
- Programs that are not Plancton's (``docker``, ``systemctl``, ...) are skipped, each with
  its reason in :data:`NOT_PLANCTONS`; any other program fails, so that a new one gets a way
  to be checked here.

A usage line (``[--option]``, ``docker|podman``) is read as the command with every optional
part given and the first of each choice. Free values (a file, a repository) are checked only
as far as the program's parser checks them.
"""

import functools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from plancton.config import schema
from tests.farm import figures

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"\s*```\s*([\w-]*)\s*$")
SEPARATORS = {"|", "||", "&&", ";"}
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
PYTHON = re.compile(r"(?:.*/)?python3?(?:\.\d+)?")
#: Environment variables that any program reads, not only the one a line runs.
GENERAL_ENVIRONMENT = {"PATH", "PYTHONPATH"}
#: Scripts of this repository that read their arguments themselves, and stop at --help.
SCRIPTS_WITH_HELP = {"./install": "install", "tests/vm/run": "tests/vm/run", "tests/farm/run": "tests/farm/run"}
#: Plancton's own commands: the file that is their entry point.
PLANCTON_COMMANDS = {"planctonctl": "bin/planctonctl", "plancton-bootstrap": "bin/plancton-bootstrap"}
NOT_PLANCTONS = {
    "docker": "the Docker CLI, not Plancton's: it acts on the engine",
    "podman": "Podman's CLI, not Plancton's: it acts on the engine",
    "systemctl": "systemd's, not Plancton's: it acts on the host's services",
    "journalctl": "systemd's journal reader, not Plancton's",
    "loginctl": "systemd-logind's, not Plancton's: it acts on the host's sessions",
    "pip": "pip installs packages from an index, not Plancton's",
    "git": "git acts on repositories, not Plancton's",
    "crontab": "cron's, not Plancton's: it changes a user's crontab",
    "ssh-keygen": "OpenSSH's, not Plancton's: it makes a signing key",
    "ssh": "OpenSSH's client, not Plancton's: it connects to another host",
    "echo": "the shell's, not Plancton's",
}
PARSE_ONLY = """
import argparse, runpy, sys

parse_known_args = argparse.ArgumentParser.parse_known_args
depth = 0


def parse_then_stop(self, *args, **kwargs):
    # the outermost parse (a verb's parser runs inside it) ends the program before it acts
    global depth
    depth += 1
    try:
        namespace, extras = parse_known_args(self, *args, **kwargs)
    finally:
        depth -= 1
    if depth:
        return namespace, extras
    if extras:
        self.error("unrecognized arguments: " + " ".join(extras))
    sys.exit(0)


argparse.ArgumentParser.parse_known_args = parse_then_stop
kind, target, *arguments = sys.argv[1:]
sys.argv = [target, *arguments]
if kind == "module":
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    runpy.run_path(target, run_name="__main__")
sys.exit(f"{target} ended without parsing its arguments")
"""


@dataclass(frozen=True)
class Block:
    """A fenced block of a page: its language, and its lines with their numbers in the page."""

    page: Path
    language: str
    lines: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Command:
    """One command of a doc's shell block: the environment it sets, its program and arguments."""

    where: str
    assignments: tuple[str, ...]
    program: str
    arguments: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join([*self.assignments, self.program, *self.arguments])}"

    @property
    def environment(self) -> set[str]:
        """Return the names of the variables the line sets for its program."""
        return {assignment.split("=")[0] for assignment in self.assignments}


def blocks(page: Path) -> list[Block]:
    """Given a Markdown page, return its fenced blocks."""
    found: list[Block] = []
    language: str | None = None
    lines: list[tuple[int, str]] = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line)
        if fence and language is None:
            language, lines = fence[1], []
        elif fence and not fence[1]:
            found.append(Block(page, language or "", tuple(lines)))
            language = None
        elif language is not None:
            lines.append((number, line))
    return found


def command_lines(block: Block) -> Iterator[tuple[int, str]]:
    """Given a shell block, yield each command line with its line number: continuation lines
    joined, and in a console block only the lines after a ``$`` prompt."""
    pending: list[str] = []
    start = 0
    for number, raw in block.lines:
        line = raw.strip()
        if block.language == "console" and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        yield start, " ".join([*pending, line])
        pending = []


def usage_words(tokens: list[str]) -> list[str]:
    """Given the words of a command or a usage line, return the command a usage line means:
    every optional part given (brackets dropped) and the first of each choice (a|b)."""
    words = [token.replace("[", "").replace("]", "").split("|")[0] for token in tokens]
    return [word for word in words if word]


def commands_of(where: str, line: str) -> list[Command]:
    """Given a command line, return its commands (split at pipes, ``&&``, ``||`` and ``;``),
    without ``sudo`` and with the environment assignments that come before the program."""
    found = []
    segment: list[str] = []
    for token in [*shlex.split(line, comments=True), ";"]:
        if token not in SEPARATORS:
            segment.append(token)
            continue
        words = usage_words(segment)
        segment = []
        assignments = []
        while words and (words[0] == "sudo" or ENV_ASSIGNMENT.match(words[0])):
            word = words.pop(0)
            if word != "sudo":
                assignments.append(word)
        if words:
            found.append(Command(where, tuple(assignments), words[0], tuple(words[1:])))
    return found


def documented_commands() -> list[Command]:
    """Return every command of every shell block of the README and docs/."""
    found = []
    for page in PAGES:
        for block in blocks(page):
            if block.language in SHELL_LANGUAGES:
                for number, line in command_lines(block):
                    found.extend(commands_of(f"{page.relative_to(REPO)}:{number}", line))
    return found


COMMANDS = documented_commands()


@functools.cache
def run(argv: tuple[str, ...], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a command in the checkout (or cwd), this checkout's packages first on the path; a
    command that several lines show runs once."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run(argv, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120, check=False)


def assert_runs(
    command: Command, argv: list[str], cwd: Path = REPO, codes: tuple[int, ...] = (0,), shown: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a command; fail, naming the doc's line and the output, when it ends with an exit code
    not in codes. Return what it did."""
    done = run(tuple(argv), cwd)
    assert done.returncode in codes, (
        f"{command}\nran as: {shown or shlex.join(argv)}\nexit {done.returncode}\n"
        f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
    )
    return done


def python_target(command: Command) -> tuple[str, str, list[str]]:
    """Given a command run by Python or by one of Plancton's commands, return how to find its
    entry point ("module" or "path"), the entry point, and the arguments it is given."""
    arguments = list(command.arguments)
    if command.program in PLANCTON_COMMANDS:
        return "path", PLANCTON_COMMANDS[command.program], arguments
    if arguments[:1] == ["-m"] and len(arguments) > 1:
        return "module", arguments[1], arguments[2:]
    if arguments and arguments[0].endswith(".py"):
        return "path", arguments[0], arguments[1:]
    pytest.fail(f"{command}: only python -m MODULE and python SCRIPT.py of this repository can be checked")


def source_of(kind: str, target: str) -> Path:
    """Return the file of a module or script of this repository."""
    if kind == "path":
        return REPO / target
    module = REPO / Path(*target.split("."))
    return module / "__main__.py" if module.is_dir() else module.with_suffix(".py")


def check_environment(command: Command, source: Path) -> None:
    """Fail when a line sets a variable that its program never names (beyond PATH and the like)."""
    text = source.read_text(encoding="utf-8")
    for name in set(command.environment) - GENERAL_ENVIRONMENT:
        assert name in text, f"{command}: {source.relative_to(REPO)} never reads {name}"


def check_python_program(command: Command) -> None:
    """Parse the line's arguments with the program's own parser, then run it with --help."""
    kind, target, arguments = python_target(command)
    source = source_of(kind, target)
    assert source.is_file(), f"{command}: no {source.relative_to(REPO)} in the repository"
    if command.program not in PLANCTON_COMMANDS:
        check_environment(command, source)
    entry = ["-m", target] if kind == "module" else [target]
    parse = [sys.executable, "-c", PARSE_ONLY, kind, target, *arguments]
    assert_runs(command, parse, shown="its parser only: " + shlex.join(["python", *entry, *arguments]))
    done = assert_runs(command, [sys.executable, *entry, *arguments, "--help"])
    assert "usage:" in done.stdout, f"{command}: --help printed no usage"


def check_script_with_help(command: Command) -> None:
    """Give the script the line's arguments, then --help; as root, ./install also dry-runs."""
    script = SCRIPTS_WITH_HELP[command.program]
    check_environment(command, REPO / script)
    done = assert_runs(command, [f"./{script}", *command.arguments, "--help"])
    for option in (argument.split("=")[0] for argument in command.arguments if argument.startswith("-")):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", done.stdout), (
            f"{command}: --help lists no {option}"
        )
    if script == "install" and os.geteuid() == 0:
        dry = [f"./{script}", *command.arguments]
        if "--dry-run" not in dry:
            dry.append("--dry-run")
        done = assert_runs(command, dry)
        assert re.search(r"would be made|nothing to (change|remove)", done.stdout), f"{command}: {done.stdout}"


def check_bench(command: Command) -> None:
    """Run the benchmark's entry point on the line's arguments with --show, which measures nothing."""
    check_environment(command, REPO / "bench" / "run")
    assert_runs(command, ["sh", "-n", "bench/run"])
    assert_runs(command, [sys.executable, "-m", "bench", *command.arguments, "--show"])


def check_test_command(command: Command, empty_folder: Path) -> None:
    """Check the test script's syntax, and its arguments with pytest in an empty folder."""
    check_environment(command, REPO / "tests" / "run")
    assert os.access(REPO / "tests" / "run", os.X_OK), "tests/run is not executable"
    assert_runs(command, ["bash", "-n", "tests/run"])
    collect = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *command.arguments]
    # exit 5: no test collected, as none is there; a wrong option ends with 4
    assert_runs(command, collect, cwd=empty_folder, codes=(0, 5))


@pytest.fixture(scope="module")
def empty_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder, the same for every test of this module."""
    return tmp_path_factory.mktemp("empty")


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_command_runs(command: Command, empty_folder: Path) -> None:
    if command.program in NOT_PLANCTONS:
        pytest.skip(f"{command.program}: {NOT_PLANCTONS[command.program]}")
    if command.program in PLANCTON_COMMANDS or PYTHON.fullmatch(command.program):
        check_python_program(command)
    elif command.program in SCRIPTS_WITH_HELP:
        check_script_with_help(command)
    elif command.program == "bench/run":
        check_bench(command)
    elif command.program == "./tests/run":
        check_test_command(command, empty_folder)
    else:
        pytest.fail(f"{command}: {command.program} is neither Plancton's nor listed in NOT_PLANCTONS")


def test_readme_shows_the_two_commands() -> None:
    shown = {(command.program, command.arguments) for command in COMMANDS if command.where.startswith("README.md:")}
    assert {("./install", ()), ("./tests/run", ())} <= shown


def test_readme_links_every_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {Path(link.partition("#")[0]).name for link in re.findall(r"\]\((docs/[^)\s]+)\)", readme)}
    assert {page.name for page in PAGES[1:]} <= linked


def configuration_blocks() -> list[tuple[str, str]]:
    """Return the YAML blocks of the README and docs/ whose keys are all Plancton's, with where
    each is."""
    found = []
    for page in PAGES:
        for block in blocks(page):
            text = "\n".join(line for _, line in block.lines)
            data = yaml.safe_load(text) if block.language == "yaml" else None
            if isinstance(data, dict) and data and set(data) <= set(schema.KEYS):
                found.append((f"{page.relative_to(REPO)}:{block.lines[0][0]}", text))
    return found


@pytest.mark.parametrize(("where", "text"), configuration_blocks(), ids=[where for where, _ in configuration_blocks()])
def test_documented_configuration_is_valid(where: str, text: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    done = run((sys.executable, "bin/planctonctl", "check-config", str(config)))
    assert done.returncode == 0, f"{where}: planctonctl check-config says:\n{done.stdout}{done.stderr}"
    assert "warning" not in done.stderr.lower(), f"{where}: {done.stderr}"


def test_configuration_page_lists_every_key() -> None:
    page = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `(\w+)` \|", page, flags=re.MULTILINE)
    assert sorted(listed) == sorted(schema.KEYS)


def heading_anchors(page: Path) -> set[str]:
    """Return the anchors of a Markdown page's headings, as GitHub makes them."""
    anchors = set()
    for block_free in re.split(r"^\s*```.*?^\s*```", page.read_text(encoding="utf-8"), flags=re.M | re.S):
        for heading in re.findall(r"^#+ (.+)$", block_free, flags=re.MULTILINE):
            anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


def test_relative_links_lead_somewhere() -> None:
    broken = []
    for page in PAGES:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(REPO)}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target):
                broken.append(f"{page.relative_to(REPO)}: {link} (no such heading)")
    assert not broken, "\n".join(broken)


def test_repository_paths_exist() -> None:
    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for path in re.findall(r"`(?:\./)?((?:plancton|tests|bench|etc|examples|docs|bin)/[^`\s]*)`", text):
            if not any(REPO.glob(path.rstrip("/"))):
                missing.append(f"{page.relative_to(REPO)}: {path}")
    assert not missing, "the docs name files that are not in the repository:\n" + "\n".join(missing)


def test_the_farm_figures_are_the_table_that_their_command_prints_of_the_results_files() -> None:
    page = (REPO / "docs" / "farm.md").read_text(encoding="utf-8")
    command = re.search(r"`python -m tests\.farm\.figures ((?:tests/farm/[\w.-]+\.json ?)+)`", page)
    assert command, "docs/farm.md names no python -m tests.farm.figures command"
    runs = [figures.load(str(REPO / path)) for path in command.group(1).split()]
    assert figures.table(runs) in page
