"""planctonctl's verbs other than start and foreground, and plancton-bootstrap, load neither
the engine's client nor a metrics client nor the daemon: ``python -X importtime`` lists every
module a command loads."""

import subprocess
import sys
from pathlib import Path

import pytest

#: What only the daemon may load: the engine's and the metrics' clients, and the daemon itself.
DAEMON_ONLY = ("docker", "requests", "influxdb", "prometheus_client", "plancton.daemon", "plancton.metrics")


def loaded_modules(*command: str) -> set[str]:
    """Run ``python -X importtime -m`` a command; return the modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", *command], capture_output=True, text=True, check=False, cwd="/"
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert lines, done.stderr
    return {line.rpartition("|")[2].strip() for line in lines}


@pytest.mark.parametrize("verb", [["status"], ["status", "--json"], ["config"], ["drain"], ["check-config"]])
def test_planctonctl_verbs_load_no_engine_or_metrics_client(verb: list[str], tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("instance: imports\nmax_docks: 1\n")
    folders = ["--confdir", str(tmp_path), "--rundir", str(tmp_path), "--logdir", str(tmp_path)]
    arguments = [*verb, str(config)] if verb == ["check-config"] else verb
    modules = loaded_modules("plancton.cli.planctonctl", *folders, *arguments)
    assert "plancton.control.paths" in modules  # it ran
    assert not sorted(name for name in modules if name.startswith(DAEMON_ONLY))


def test_plancton_bootstrap_loads_no_engine_or_metrics_client() -> None:
    modules = loaded_modules("plancton.cli.bootstrap", "--help")
    assert "plancton.cli" in modules  # it ran
    assert not sorted(name for name in modules if name.startswith(DAEMON_ONLY))
