"""``/admin/dlq`` on the real stack: list, replay with a filter, purge with confirmation."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from consumers.dispatch import DeadReason, dead
from jobstore.model import JobStatus
from producers.api.app import create_app
from producers.auth.principal import Scope
from producers.backends import confirmed, open_producer
from producers.submit import JobRequest
from taskctl import admin_routes
from taskctl.assembly import api_services
from tests.broker import channel, depth
from tests.credentials import bearer, issue_key
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.envelope import Envelope
from topology.loader import load_topology
from topology.settings import load_settings

pytestmark = pytest.mark.rabbitmq


async def test_admin_dlq_routes(vhost, tmp_path: Path):
    await apply_topology(compile_topology(load_topology()), vhost)
    env = {
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
    }
    producer = await open_producer(load_settings(env), confirmed("test"))
    backends, publisher, submitter = producer.backends, producer.publisher, producer.submitter
    ids = []
    for i in range(3):
        done = await submitter.submit(JobRequest(type="email", payload={"n": i}))
        await submitter.settle()  # as the job's worker would have written its row
        letter = Envelope.new("email", {"n": i}, id=done.job_id)
        decision = dead(
            letter,
            DeadReason.PERMANENT,
            f"Permanent: no mailbox {i}",
            group="email",
            topology=backends.topology,
        )
        await publisher.publish(decision.envelope, decision.route)
        await backends.store.transition(
            done.job_id, JobStatus.DEAD, allowed_from=frozenset({JobStatus.QUEUED})
        )
        ids.append(done.job_id)
    await publisher.close()
    await backends.close()
    async with channel(vhost) as ch:
        await (await ch.get_queue("taskq.email", ensure=False)).purge()

    app = create_app(lambda: api_services(load_settings(env)), routers=[admin_routes.router])
    async with app.router.lifespan_context(app):
        token = await issue_key(
            app.state.services.submitter.store, scopes=(Scope.ADMIN, Scope.JOBS_READ)
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", timeout=30, headers=bearer(token)
        ) as client:
            listed = await client.get("/admin/dlq/email")
            assert listed.status_code == 200
            letters = listed.json()["letters"]
            assert sorted(row["id"] for row in letters) == sorted(ids)
            assert {row["reason"] for row in letters} == {"permanent"}
            assert listed.json()["next_cursor"] is None

            refused = await client.post("/admin/dlq/email/replay", json={})
            assert refused.status_code == 422
            replayed = await client.post("/admin/dlq/email/replay", json={"id": ids[0]})
            assert replayed.json() == {"replayed": 1, "left": 2}
            assert (await client.get(f"/jobs/{ids[0]}")).json()["status"] == "queued"

            unconfirmed = await client.post("/admin/dlq/email/purge", json={"error": "mailbox 1"})
            assert unconfirmed.status_code == 422
            purged = await client.post(
                "/admin/dlq/email/purge", json={"error": "mailbox 1", "confirm": True}
            )
            assert purged.json() == {"purged": 1, "left": 1}

            assert (await client.get("/admin/dlq/nope")).status_code == 422
            assert (
                await client.get("/admin/dlq/email", params={"older_than": "soon"})
            ).status_code == 422
    async with channel(vhost) as ch:
        assert await depth(ch, "taskq.email") == 1
        assert await depth(ch, "taskq.email.dlq") == 1
