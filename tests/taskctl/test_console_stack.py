"""The console on the real stack over httpx: overview figures, dead letters, audited replay and purge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn

from consumers.dispatch import DeadReason, dead
from jobstore.model import JobStatus
from producers.auth.principal import Scope
from producers.backends import confirmed, open_producer
from producers.submit import JobRequest
from taskctl.assembly import api_app
from tests.broker import channel, depth
from tests.credentials import issue_key
from tests.helpers import eventually
from tests.taskctl.console_client import csrf_of, log_in
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.envelope import Envelope
from topology.loader import load_topology
from topology.management import ManagementClient
from topology.settings import load_settings

pytestmark = pytest.mark.rabbitmq


async def dead_letters(env: dict[str, str], count: int) -> list[str]:
    """Submit ``count`` email jobs and dead-letter each (as a worker would), off the work queue."""
    producer = await open_producer(load_settings(env), confirmed("test"))
    backends, publisher, submitter = producer.backends, producer.publisher, producer.submitter
    ids = []
    try:
        for i in range(count):
            done = await submitter.submit(JobRequest(type="email", payload={"n": i}))
            await submitter.settle()
            letter = Envelope.new("email", {"n": i}, id=done.job_id)
            why = f"Permanent: no mailbox {i}"
            decision = dead(
                letter, DeadReason.PERMANENT, why, group="email", topology=backends.topology
            )
            await publisher.publish(decision.envelope, decision.route)
            await backends.store.transition(
                done.job_id,
                JobStatus.DEAD,
                allowed_from=frozenset({JobStatus.QUEUED}),
                last_error=why,
            )
            ids.append(done.job_id)
    finally:
        await publisher.close()
        await backends.close()
    return ids


@pytest.fixture
async def stack(vhost, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict, list[str]]]:
    await apply_topology(compile_topology(load_topology()), vhost)
    env = {
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
    }
    ids = await dead_letters(env, 4)
    async with channel(vhost) as ch:
        await (await ch.get_queue("taskq.email", ensure=False)).purge()
    app = api_app(load_settings(env), environ={})
    # A real server: httpx's ASGI transport would hold a stream's events until it ends.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: _started(server), within=30, every=0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        store = app.state.services.submitter.store
        keys = {
            "admin": await issue_key(store, scopes=(Scope.ADMIN, Scope.JOBS_READ), name="on-call"),
            "reader": await issue_key(store, scopes=(Scope.JOBS_READ,), name="reader"),
        }
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, keys, ids
    finally:
        server.should_exit = True
        await serving


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def test_dead_letters_are_browsed_inspected_replayed_and_purged_with_an_audit(stack, vhost):
    client, keys, ids = stack
    assert (await log_in(client, keys["admin"])).status_code == 303

    async def overview_dead() -> bool:
        page = await client.get("/console/")
        return '<td data-field="dead" class="attention">4</td>' in page.text

    await eventually(overview_dead, within=30, every=1)  # the broker's statistics lag a few seconds

    page = await client.get("/console/dlq/email")
    assert page.status_code == 200
    assert all(job_id in page.text for job_id in ids)
    assert "No replay or purge yet." in page.text
    token = csrf_of(page)
    filtered = await client.get("/console/dlq/email", params={"error": "mailbox 2"})
    assert ids[2] in filtered.text
    assert ids[1] not in filtered.text
    inspected = await client.get(f"/console/dlq/email/letters/{ids[0]}")
    assert "Permanent: no mailbox 0" in inspected.text
    assert "permanent" in inspected.text

    # Two chosen by hand, at a rate: back to work.
    chosen = await client.post(
        "/console/dlq/email/replay", data={"csrf": token, "id": [ids[0], ids[1]], "rate": "20"}
    )
    assert chosen.status_code == 303
    for job_id in ids[:2]:
        assert (await client.get(f"/console/jobs/{job_id}")).text.count("queued") >= 1

    # A purge needs the group's name typed; then every match goes for good.
    unconfirmed = await client.post(
        "/console/dlq/email/purge",
        data={"csrf": token, "all": "1", "error": "mailbox 3", "confirm": "yes"},
    )
    assert unconfirmed.status_code == 422
    purged = await client.post(
        "/console/dlq/email/purge",
        data={"csrf": token, "all": "1", "error": "mailbox 3", "confirm": "email"},
    )
    assert purged.status_code == 303
    async with channel(vhost) as ch:
        assert await depth(ch, "taskq.email") == 2
        assert await depth(ch, "taskq.email.dlq") == 1

    audit = (await client.get("/console/dlq/email")).text.split('id="audit"')[1]
    rows = audit.split("<tbody>")[1].split("</tr>")
    assert "purge" in rows[0]
    assert "error containing &#39;mailbox 3&#39;" in rows[0]
    assert "on-call" in rows[0]
    assert "<td>1</td>" in rows[0]  # one purged
    assert "replay" in rows[1]
    assert "2 chosen" in rows[1]
    assert "<td>20.0</td>" in rows[1]
    assert "<td>2</td>" in rows[1]  # two replayed


async def test_a_reader_gets_403_on_every_admin_door_and_the_dlq_stays_whole(stack, vhost):
    client, keys, ids = stack
    await log_in(client, keys["reader"])
    page = await client.get(f"/console/jobs/{ids[0]}")
    assert page.status_code == 200
    assert "dead" in page.text
    assert "Replay" not in page.text
    token = csrf_of(page)
    for path, form in (
        ("/console/dlq/email/replay", {"id": ids[0]}),
        ("/console/dlq/email/replay", {"all": "1"}),
        ("/console/dlq/email/purge", {"all": "1", "confirm": "email"}),
    ):
        refused = await client.post(path, data={"csrf": token, **form})
        assert refused.status_code == 403
    assert (await client.get("/console/dlq/email")).status_code == 403
    async with channel(vhost) as ch:
        assert await depth(ch, "taskq.email.dlq") == 4


async def test_the_overview_streams_its_figures_as_server_sent_events(stack):
    client, keys, _ = stack
    await log_in(client, keys["admin"])
    async with client.stream("GET", "/console/overview/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.aiter_lines()
        assert await anext(lines) == "retry: 3000"
        while await anext(lines) != "event: overview":
            pass
        data = orjson.loads((await anext(lines)).removeprefix("data: "))
    assert set(data["groups"]) == {"email", "github", "standard", "default", "callbacks"}
    assert set(data["groups"]["email"]["figures"]) >= {"ready", "dead", "consumers", "urgent"}


async def test_the_topology_page_draws_every_object_and_marks_the_brokers_drift(stack, vhost):
    client, keys, _ = stack
    await log_in(client, keys["admin"])
    page = await client.get("/console/topology")
    assert page.status_code == 200
    assert "exactly what the topology file declares" in page.text
    declared = compile_topology(load_topology())
    assert page.text.count('<g class="node ') == len(declared.exchanges) + len(declared.queues)
    assert "drift" not in page.text.split("<svg")[1]
    async with ManagementClient(vhost) as management:
        await management.delete(vhost.vhost, "queue", "taskq.github.dlq")
    drifted = await client.get("/console/topology")
    assert '<g class="node queue drift"' in drifted.text
    assert (
        '<td>queue taskq.github.dlq (classic)</td><td class="attention">create</td>' in drifted.text
    )
    assert "1 difference," not in drifted.text  # its binding is gone with it: two
    assert "2 differences" in drifted.text
