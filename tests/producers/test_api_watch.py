"""Live job status over WebSockets, fed from the events exchange, with the real lifespan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from producers.api.app import create_app
from taskctl.assembly import api_services
from tests.credentials import authorize
from topology.settings import load_settings

pytestmark = pytest.mark.rabbitmq


def make_client(applied, tmp_path: Path) -> TestClient:
    env = {
        "TASKQ_AMQP_URL": applied.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
    }
    return TestClient(create_app(lambda: api_services(load_settings(env))))


@pytest.fixture
def client(applied, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(applied, tmp_path) as client:
        authorize(client)
        yield client


def test_job_watch_starts_with_the_stored_state_and_ends_on_a_final_one(client: TestClient):
    job = client.post("/jobs", json={"type": "email", "delay": 60}).json()
    with client.websocket_connect(f"/ws/jobs/{job['id']}") as ws:
        first = ws.receive_json()
        assert first["status"] == "scheduled"
        # The cancel travels as an event through RabbitMQ back to this replica's hub.
        assert client.delete(f"/jobs/{job['id']}").status_code == 200
        second = ws.receive_json()
        assert second["id"] == job["id"]
        assert second["status"] == "cancelled"


def test_type_watch_streams_changes_of_that_type_only(client: TestClient):
    email = client.post("/jobs", json={"type": "email", "delay": 60}).json()
    other = client.post("/jobs", json={"type": "job.x", "delay": 60}).json()
    with client.websocket_connect("/ws/jobs?type=email") as ws:
        client.delete(f"/jobs/{other['id']}")
        client.delete(f"/jobs/{email['id']}")
        event = ws.receive_json()
        assert (event["id"], event["type"], event["status"]) == (
            email["id"],
            "email",
            "cancelled",
        )


def test_watching_an_unknown_job_closes_with_4404(client: TestClient):
    with client.websocket_connect("/ws/jobs/nope") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4404
