"""Workflows through the HTTP API and taskctl: submit, read, list, cancel, replay a key; what each refuses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from jobstore.sqlite import SqliteJobStore
from producers.auth.principal import Scope
from producers.submit import Submitter
from producers.workflows import chain, chord, group, step, submit_workflow
from taskctl.cli import app
from tests.credentials import bearer, issue_key
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.helpers import compiled, table_rows, write_topology
from tests.producers.api_harness import make_api

TOPOLOGY = """
groups:
  flows: {jobs: ["flow.#"]}
  other: {jobs: ["other.#"]}
"""


async def test_a_chord_goes_in_over_http_and_is_read_listed_and_cancelled():
    api = make_api(compiled(TOPOLOGY))
    body = chord(
        group(step("flow.a", {"n": 1}), step("flow.b", priority="high")), step("flow.merge")
    ).model_dump(mode="json", exclude_none=True)
    sent = await api.client.post("/workflows", json=body, headers={"Idempotency-Key": "w-1"})
    assert sent.status_code == 202, sent.text
    view = sent.json()
    assert (view["kind"], view["status"], view["steps_total"], view["pending"]) == (
        "chord",
        "running",
        3,
        2,
    )
    members, callback = view["steps"][:2], view["steps"][2]
    assert [s["job"]["status"] for s in members] == ["queued", "queued"]
    assert (callback["role"], callback["job"]["status"]) == ("callback", "scheduled")
    assert {s["job"]["workflow_id"] for s in view["steps"]} == {view["id"]}
    # The members went out; the callback waits for them.
    assert [p.envelope.type for p in api.publisher.published] == ["flow.a", "flow.b"]
    again = await api.client.post("/workflows", json=body, headers={"Idempotency-Key": "w-1"})
    assert (again.json()["id"], again.json()["replayed"]) == (view["id"], True)
    other = await api.client.post(
        "/workflows", json={**body, "on_failure": "continue"}, headers={"Idempotency-Key": "w-1"}
    )
    assert other.status_code == 422
    assert (await api.client.get(f"/workflows/{view['id']}")).json()["steps"] == view["steps"]
    listed = (await api.client.get("/workflows")).json()
    assert [w["id"] for w in listed["workflows"]] == [view["id"]]
    step_job = members[0]["job_id"]
    assert (await api.client.delete(f"/jobs/{step_job}")).status_code == 409  # cancel the workflow
    cancelled = (await api.client.delete(f"/workflows/{view['id']}")).json()
    assert cancelled["status"] == "cancelled"
    assert [s["job"]["status"] for s in cancelled["steps"]] == ["cancelled"] * 3
    assert (await api.client.delete(f"/workflows/{view['id']}")).status_code == 409


async def test_the_api_refuses_what_a_workflow_cannot_be():
    api = make_api(compiled(TOPOLOGY))
    cases = [
        ({"kind": "chord", "steps": [{"type": "flow.a"}]}, 422),  # a chord without a callback
        ({"kind": "chain", "steps": []}, 422),
        ({"kind": "group", "steps": [{"type": "nowhere"}]}, 422),  # no group takes it
        ({"kind": "group", "steps": [{"type": "taskq.callback"}]}, 403),  # reserved
        ({"kind": "group", "steps": [{"type": "flow.a", "delay": 5}]}, 422),
    ]
    for body, status in cases:
        assert (await api.client.post("/workflows", json=body)).status_code == status, body
    narrow = await issue_key(
        api.store, scopes=(Scope.JOBS_WRITE, Scope.JOBS_READ), job_types=("flow.#",)
    )
    mixed = {"kind": "group", "steps": [{"type": "flow.a"}, {"type": "other.b"}]}
    refused = await api.client.post("/workflows", json=mixed, headers=bearer(narrow))
    assert refused.status_code == 403
    sent = await api.client.post("/workflows", json=mixed)
    # A credential that may not see every step's type sees no such workflow.
    hidden = await api.client.get(f"/workflows/{sent.json()['id']}", headers=bearer(narrow))
    assert hidden.status_code == 404
    assert [p.envelope.type for p in api.publisher.published] == ["flow.a", "other.b"]


async def stored_chain(path: Path) -> str:
    """Store a chain of three steps in the SQLite file ``path``; return its id."""
    topology = compiled(TOPOLOGY)
    store = SqliteJobStore(path)
    await store.migrate()
    submitter = Submitter(topology, InMemoryPublisher(topology), store, InMemoryBlobStore())
    try:
        answer = await submit_workflow(
            submitter, chain(step("flow.a"), step("flow.b"), step("flow.c")), tenant="default"
        )
    finally:
        await store.close()
    return answer.workflow.id


def test_taskctl_shows_and_cancels_a_workflow(tmp_path: Path):
    flow_id = asyncio.run(stored_chain(tmp_path / "jobs.sqlite3"))
    env = {
        "TASKQ_TOPOLOGY": str(write_topology(tmp_path, TOPOLOGY)),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "COLUMNS": "200",
    }
    runner = CliRunner()
    shown = runner.invoke(app, ["workflow", "show", flow_id], env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == (
        f"workflow {flow_id}: chain, running (3 steps, 3 pending, 0 failed)"
    )
    assert [r["status"] for r in table_rows(shown.output)] == ["queued", "scheduled", "scheduled"]
    cancelled = runner.invoke(app, ["workflow", "cancel", flow_id, "--json"], env=env)
    assert json.loads(cancelled.output)["status"] == "cancelled"
    again = runner.invoke(app, ["workflow", "cancel", flow_id], env=env)
    assert again.exit_code == 1
    assert "only a running workflow can be cancelled" in again.output
    unknown = runner.invoke(app, ["workflow", "show", "nope"], env=env)
    assert "no workflow has id 'nope'" in unknown.output
