"""Read the observability artifacts: dashboards, alert rules, runbooks, and the code's metrics."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES = GRAFANA / "rules" / "taskq-alerts.yaml"
RULE_TESTS = GRAFANA / "rules" / "taskq-alerts.test.yaml"
DOCS = ROOT / "docs"

# Where metrics are defined: the packages, never tests or benchmarks.
PACKAGES = ("topology", "jobstore", "producers", "consumers", "webhooks", "taskctl")
METRIC_KINDS = {"Counter", "Gauge", "Histogram", "Summary"}
# telemetry.metrics declares a MetricSet's metrics with these.
DECLARATIONS = {"counter": "Counter", "gauge": "Gauge", "histogram": "Histogram"}
# Series a histogram or summary exposes besides its name (and _created on every counter).
SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_created")
METRIC_NAME = re.compile(r"\btaskq_[a-z0-9_]+")


def load_dashboard(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), path
    return loaded


def load_rules() -> list[dict[str, Any]]:
    """Return every rule of the alert rules file."""
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the dashboard's panels, those inside collapsed rows included, rows excluded."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_queries() -> list[tuple[str, str]]:
    """Return ``(where, expr)`` for every panel target of every dashboard."""
    found = []
    for path in DASHBOARDS:
        dashboard = load_dashboard(path)
        for panel in panels(dashboard):
            for target in panel["targets"]:
                where = f"{dashboard['uid']} panel {panel['id']} {target['refId']}"
                found.append((where, target["expr"]))
    return found


def variable_selectors() -> list[tuple[str, str]]:
    """Return ``(where, selector)`` for the series selector of every label_values() variable."""
    found = []
    for path in DASHBOARDS:
        dashboard = load_dashboard(path)
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert match, (
                f"{dashboard['uid']} ${variable['name']}: not label_values(selector, label)"
            )
            found.append((f"{dashboard['uid']} ${variable['name']}", match.group(1)))
    return found


def as_promql(expr: str) -> str:
    """Return a Grafana query with its variables replaced, so that Prometheus can parse it."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    # Every other variable is used inside a quoted label matcher, where any text parses.
    return re.sub(r"\$\{\w+(:\w+)?\}|\$\w+", "x", expr)


def rule_queries() -> list[tuple[str, str]]:
    """Return ``(where, expr)`` for every rule of the alert rules file."""
    return [(rule.get("alert") or rule["record"], rule["expr"]) for rule in load_rules()]


def used_metric_names() -> dict[str, set[str]]:
    """Return each taskq metric the dashboards' and rules' queries use, with the series seen.

    Only queries are read (not descriptions or comments, which may mention name patterns).
    """
    queries = [*panel_queries(), *variable_selectors(), *rule_queries()]
    text = "\n".join(expr for _, expr in queries)
    used: dict[str, set[str]] = {}
    for series in set(METRIC_NAME.findall(text)):
        name = series
        for suffix in SERIES_SUFFIXES:
            name = name.removesuffix(suffix)
        used.setdefault(name, set()).add(series)
    return used


def defined_metrics() -> dict[str, str]:
    """Return ``{exposed name: kind}`` of every Counter/Gauge/Histogram/Summary in the packages.

    Read from the source: the first argument (or ``name=``) of each such call that is a
    string literal. prometheus_client exposes a counter as ``<name>_total`` whether or not
    the code spells the suffix, so counters are keyed by that.
    """
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                kind, name = _metric_call(node)
                if kind is None or name is None:
                    continue
                if kind == "Counter":
                    name = name.removesuffix("_total") + "_total"
                found[name] = kind
    return found


def _metric_call(node: ast.AST) -> tuple[str | None, str | None]:
    if not isinstance(node, ast.Call):
        return None, None
    func = node.func
    kind = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    kind = DECLARATIONS.get(kind or "", kind)
    if kind not in METRIC_KINDS:
        return None, None
    candidates = node.args[:1] + [k.value for k in node.keywords if k.arg == "name"]
    for arg in candidates:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return kind, arg.value
    return kind, None
