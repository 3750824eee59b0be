"""The farm's alert rules (etc/prometheus/plancton-rules.yml): valid for Prometheus, each one
unit-tested with promtool against the fault it is for, and naming only metrics Plancton
exports."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from plancton.control.ledger import Day
from plancton.metrics.prometheus import Snapshot, families
from tests.test_prometheus import make_report

REPOSITORY = Path(__file__).resolve().parent.parent
RULES = REPOSITORY / "etc" / "prometheus" / "plancton-rules.yml"
RULE_TESTS = REPOSITORY / "tests" / "data" / "plancton-rules-test.yml"

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is missing")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


def alerts() -> list[dict[str, str]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


def test_each_alert_fires_for_its_fault_and_clears() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    named = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text(encoding="utf-8")))
    assert named == {rule["alert"] for rule in alerts()}, "every alert has a test, and only those"


def test_the_rules_name_only_metrics_plancton_exports() -> None:
    report = make_report(image_ready=False, config_rejected=True, engine="Docker Engine 20.10.24")
    exported = {family.name for family in families(Snapshot("node_a", report, ledger=Day()))}
    exported |= {f"{name}_total" for name in exported} | {f"{name}_info" for name in exported}
    named = {name for rule in alerts() for name in re.findall(r"\b(plancton_\w+)", rule["expr"])}
    assert named and named <= exported, named - exported
