"""The alert rules and every dashboard query, checked by promtool; metric names against the code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.grafana.artifacts import (
    DOCS,
    ROOT,
    RULE_TESTS,
    RULES,
    as_promql,
    defined_metrics,
    load_rules,
    panel_queries,
    used_metric_names,
    variable_selectors,
)

USED = used_metric_names()
DEFINED = defined_metrics()


def run(promtool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alert_rules_pass_promtool_check(promtool: str):
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_unit_tests_pass(promtool: str):
    result = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def check_queries(promtool: str, tmp_path: Path, queries: list[tuple[str, str]]):
    """Run promtool check rules on ``queries`` as recording rules; return the result."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(expr), "labels": {"where": where}}
        for i, (where, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    return run(promtool, "check", "rules", str(path))


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path):
    queries = panel_queries() + variable_selectors()
    assert len(queries) > 50
    result = check_queries(promtool, tmp_path, queries)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_the_query_check_catches_bad_promql(promtool: str, tmp_path: Path):
    bad = [("bad", 'sum by (group) rate(taskq_jobs_started_total{group=~"$group"}[5m])')]
    result = check_queries(promtool, tmp_path, bad)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_grafana_variables_become_valid_promql():
    expr = 'sum(rate(x{group=~"$group", type=~"${type}"}[$__rate_interval]))'
    assert as_promql(expr) == 'sum(rate(x{group=~"x", type=~"x"}[5m]))'


def test_every_alert_is_labelled_annotated_and_has_a_runbook():
    rules = load_rules()
    assert len(rules) >= 8
    for rule in rules:
        name = rule["alert"]
        assert name.startswith("Taskq"), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert annotations["runbook_url"] == f"docs/runbooks/{name}.md"
        assert (ROOT / annotations["runbook_url"]).is_file(), name


def test_every_alert_is_tested_firing_and_not_firing():
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    fires = {c["alertname"] for c in checks if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in checks if not c.get("exp_alerts")}
    alerts = {rule["alert"] for rule in load_rules()}
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"


def test_every_runbook_belongs_to_an_alert():
    alerts = {rule["alert"] for rule in load_rules()}
    assert {p.stem for p in (DOCS / "runbooks").glob("*.md")} == alerts


@pytest.mark.parametrize("name", sorted(USED))
def test_metric_is_defined_in_the_code(name: str):
    # The code, not the catalogue in the notes, is what Prometheus will scrape.
    assert name in DEFINED, (
        f"{name} (used as {sorted(USED[name])}) is not created by any Counter/Gauge/Histogram "
        "call under topology/ jobstore/ producers/ consumers/ webhooks/ taskctl/"
    )
    if any(series.endswith("_bucket") for series in USED[name]):
        assert DEFINED[name] == "Histogram", f"{name} is used as a histogram"


def test_the_metric_scan_reads_the_code():
    # Counters count under their exposed name, whether the code spells _total or not.
    assert DEFINED["taskq_api_requests_total"] == "Counter"
    assert DEFINED["taskq_api_request_duration_seconds"] == "Histogram"
    assert DEFINED["taskq_breaker_state"] == "Gauge"
    assert "taskq_made_up_total" not in DEFINED
    assert "taskq_job_queue_wait_seconds" in USED
    assert "taskq_job_queue_wait_seconds_bucket" in USED["taskq_job_queue_wait_seconds"]
