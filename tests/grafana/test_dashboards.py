"""The Grafana dashboards: a valid dashboard model, generated from the script, documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.grafana.artifacts import DASHBOARDS, DOCS, GRAFANA, load_dashboard, panels

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NAMES = [path.name for path in DASHBOARDS]


@pytest.fixture(params=DASHBOARDS, ids=NAMES)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    path: Path = request.param
    return load_dashboard(path)


def test_there_are_the_four_dashboards():
    assert sorted(NAMES) == [
        "taskq-autoscaler.json",
        "taskq-dlq.json",
        "taskq-group.json",
        "taskq-overview.json",
    ]
    uids = [load_dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


def test_the_committed_json_is_what_the_script_generates():
    script = GRAFANA / "build_dashboards.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_dashboard_model_basics(dashboard: dict[str, Any]):
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] >= 36  # datasource variables as {type, uid} objects
    assert dashboard["title"]
    assert dashboard["uid"].startswith("taskq-")
    assert len(dashboard["uid"]) <= 40  # Grafana's limit
    assert "taskq" in dashboard["tags"]
    assert dashboard["time"] == {"from": "now-6h", "to": "now"}


def test_datasource_and_group_variables(dashboard: dict[str, Any]):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    group = variables["group"]
    assert group["type"] == "query"
    assert group["datasource"] == DATASOURCE
    assert group["definition"].startswith("label_values(")
    assert group["definition"].endswith(", group)")
    for variable in variables.values():
        if variable["type"] == "query" and variable["includeAll"]:
            # Panels filter with =~"$var": "All" must be a regex that matches everything.
            assert variable["allValue"] == ".*"


def test_every_panel_queries_prometheus_through_the_variable(dashboard: dict[str, Any]):
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["title"], panel["id"]
        assert panel["description"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
            assert target["expr"].strip(), panel["title"]


def test_panels_use_the_group_variable(dashboard: dict[str, Any]):
    # The delay tiers, publish confirms, webhooks, the APIs and stream sources are not per group.
    unscoped = (
        "taskq_retry_tier_messages",
        "taskq_publish_confirm",
        "taskq_webhook",
        "taskq_api",
        "taskq_grpc",
        "taskq_stream",
        "ALERTS",
    )
    for panel in panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            assert '$group"' in expr or any(name in expr for name in unscoped), panel["title"]


def test_panels_sit_on_the_grid_without_overlapping(dashboard: dict[str, Any]):
    taken: dict[tuple[int, int], str] = {}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= pos.keys()
        assert min(pos["w"], pos["h"]) > 0, panel["title"]
        assert 0 <= pos["x"] <= pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_panel_is_explained_in_the_on_call_guide(dashboard: dict[str, Any]):
    # Markdown wraps lines anywhere: compare with the whitespace collapsed.
    guide = " ".join((DOCS / "observability.md").read_text(encoding="utf-8").split())
    assert f"## Dashboard: {dashboard['title']}" in guide
    missing = [p["title"] for p in panels(dashboard) if f"**{p['title']}**" not in guide]
    assert missing == []


def test_provisioning_points_grafana_at_the_dashboards():
    provisioning = GRAFANA / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((provisioning / "dashboards" / "taskq.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # Mounted from the repository's grafana/dashboards/ (docs/observability.md).
    assert provider["options"]["path"].endswith("/grafana/dashboards")
