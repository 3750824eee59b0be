"""The shipped Grafana dashboard for Prometheus (etc/grafana/plancton-prometheus-dashboard.json)
as a test runs it: its panels' PromQL queries and its variables' queries, with Grafana's macros
and the values a user chose put in as Grafana writes them, ready for a real Prometheus.
"""

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

DASHBOARD = Path(__file__).resolve().parents[2] / "etc" / "grafana" / "plancton-prometheus-dashboard.json"
#: How Grafana renders its macros for a query over the last minutes.
MACROS = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m"}
#: How a query variable's ``label_values(SELECTOR, LABEL)`` is written.
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+), *(?P<label>\w+)\)")


class Query(NamedTuple):
    """One target of a panel: the panel's title, the target's refId and its PromQL."""

    panel: str
    ref: str
    expr: str

    @property
    def where(self) -> str:
        """The panel and target, as a failure names them."""
        return f"{self.panel} ({self.ref})"


def load() -> dict[str, Any]:
    """Return the dashboard, as its JSON says it."""
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """Given the dashboard, return every panel's every target."""
    panels = dashboard["panels"]
    return [Query(panel["title"], target["refId"], target["expr"]) for panel in panels for target in panel["targets"]]


def chosen(*values: str) -> str:
    """Given the values a user chose for a variable, return what Grafana writes for them in a
    regex matcher: one value escaped, several as ``(a|b)``; the backslashes doubled inside
    PromQL's quotes."""
    escaped = [re.escape(value).replace("\\", "\\\\") for value in values]
    return escaped[0] if len(escaped) == 1 else f"({'|'.join(escaped)})"


def all_chosen(dashboard: dict[str, Any]) -> dict[str, str]:
    """Given the dashboard, return what Grafana writes for each variable when the user chose
    "All": the variable's ``allValue``, put in as it is."""
    return {variable["name"]: variable["allValue"] for variable in dashboard["templating"]["list"]}


def render(query: str, variables: dict[str, str]) -> str:
    """Given a query and what Grafana writes for each variable (:func:`chosen`,
    :func:`all_chosen`), return the query with Grafana's macros and the variables put in;
    fail when it names a variable or macro that is not given."""
    rendered = query
    for name, macro in MACROS.items():
        rendered = rendered.replace(name, macro)
    for name, written in sorted(variables.items(), key=lambda item: -len(item[0])):
        rendered = rendered.replace(f"${name}", written)
    assert not re.search(r"\$\w", rendered), f"a variable Grafana would fill is left in {rendered}"
    return rendered


def variable_queries(dashboard: dict[str, Any], variables: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Given the dashboard and what Grafana writes for each variable, return each query
    variable's ``label_values`` as a PromQL query whose series carry the values, and the label
    that holds them: ``{name: (query, label)}``."""
    found = {}
    for variable in dashboard["templating"]["list"]:
        match = LABEL_VALUES.fullmatch(variable["definition"])
        assert match, f"variable {variable['name']}: not a label_values query: {variable['definition']}"
        selector, label = render(match["selector"], variables), match["label"]
        found[variable["name"]] = (f"group by ({label}) ({selector})", label)
    return found
