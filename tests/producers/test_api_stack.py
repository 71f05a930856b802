"""The job API on the real stack: RabbitMQ, SQLite or PostgreSQL, a local dir or S3 blobs."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from jobstore.blobs import open_blob_store
from producers.api.app import create_app
from taskctl.assembly import api_services
from tests.broker import channel, depth
from tests.conftest import scratch_database
from tests.credentials import bearer, issue_key
from tests.helpers import eventually
from tests.s3server import s3_client
from topology.compiled import compile_topology
from topology.envelope import decode
from topology.loader import load_topology
from topology.routes import next_hop
from topology.settings import ApiSettings, load_settings

pytestmark = pytest.mark.rabbitmq


@dataclass
class Stack:
    client: httpx.AsyncClient
    env: dict[str, str]
    settings: object


@asynccontextmanager
async def running(
    env: dict[str, str], settings: ApiSettings | None = None, routers: Sequence[APIRouter] = ()
) -> AsyncIterator[httpx.AsyncClient]:
    registry = CollectorRegistry()  # as the assembly does: the app's and the submitter's metrics
    app = create_app(
        lambda: api_services(load_settings(env), registry),
        settings or ApiSettings(),
        registry=registry,
        routers=routers,
    )
    async with app.router.lifespan_context(app):
        token = await issue_key(app.state.services.submitter.store)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://taskq.test", timeout=30, headers=bearer(token)
        ) as client:
            yield client


@pytest.fixture(params=["sqlite+dir", pytest.param("postgres+s3", marks=pytest.mark.postgres)])
async def stack(request, applied, tmp_path: Path) -> AsyncIterator[Stack]:
    env = {
        "TASKQ_AMQP_URL": applied.amqp_url.get_secret_value(),
        "TASKQ_CONFIRM_TIMEOUT": "3",
        "TASKQ_CLAIM_CHECK_BYTES": "2048",
    }
    if request.param == "sqlite+dir":
        env |= {
            "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        }
        async with running(env) as client:
            yield Stack(client, env, applied)
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"taskq-{uuid.uuid4().hex[:10]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    async with scratch_database(request.getfixturevalue("postgres_url")) as dsn:
        env |= {
            "TASKQ_STORE_URL": dsn,
            "TASKQ_BLOB_URL": f"s3://{bucket}/payloads",
            "TASKQ_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
        }
        monkeypatch = request.getfixturevalue("monkeypatch")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # boto3 reads the process's
            monkeypatch.setenv(name, env[name])
        async with running(env) as client:
            yield Stack(client, env, applied)


async def test_quick_start_job_is_confirmed_stored_and_queued(stack: Stack):
    response = await stack.client.post(
        "/jobs", json={"type": "email", "payload": {"to": "user@example.com"}}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    got = (await stack.client.get(f"/jobs/{job_id}")).json()
    assert got["status"] == "queued"
    async with channel(stack.settings) as ch:
        assert await depth(ch, "taskq.email") == 1


async def test_fifty_concurrent_requests_with_one_key_create_exactly_one_job(stack: Stack):
    body = {"type": "job.once", "payload": {"n": 1}}
    responses = await asyncio.gather(
        *(
            stack.client.post("/jobs", json=body, headers={"Idempotency-Key": "once"})
            for _ in range(50)
        )
    )
    codes = [r.status_code for r in responses]
    assert set(codes) <= {202, 409}, codes
    assert len({r.json()["id"] for r in responses if r.status_code == 202}) == 1
    listed = (await stack.client.get("/jobs", params={"type": "job.once"})).json()
    assert len(listed["jobs"]) == 1
    async with channel(stack.settings) as ch:
        assert await depth(ch, "taskq.default") == 1
    # A retry after completion replays the original answer.
    again = await stack.client.post("/jobs", json=body, headers={"Idempotency-Key": "once"})
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"


async def test_delayed_job_arrives_no_earlier_than_asked(stack: Stack):
    topology = compile_topology(load_topology())
    async with channel(stack.settings) as ch:
        arrived: asyncio.Future[tuple[float, dict]] = asyncio.get_running_loop().create_future()
        exchange_cache: dict[str, object] = {}

        async def on_message(message: AbstractIncomingMessage) -> None:
            envelope = decode(message.body)
            hop = next_hop(topology, envelope, datetime.now(UTC))
            if hop is not None:  # what the worker's dispatcher does with an early arrival
                exchange = exchange_cache.get(hop.exchange) or await ch.get_exchange(
                    hop.exchange, ensure=False
                )
                exchange_cache[hop.exchange] = exchange
                import aio_pika

                await exchange.publish(  # type: ignore[attr-defined]
                    aio_pika.Message(
                        message.body, headers={**(message.headers or {}), **hop.headers}
                    ),
                    hop.routing_key,
                )
                await message.ack()
                return
            await message.ack()
            if not arrived.done():
                arrived.set_result((time.time(), envelope.model_dump()))

        queue = await ch.get_queue("taskq.email", ensure=False)
        await queue.consume(on_message)
        asked = time.time()
        response = await stack.client.post("/jobs", json={"type": "email", "delay": 2.5})
        job = response.json()
        assert job["status"] == "scheduled"
        async with asyncio.timeout(15):
            at, envelope = await arrived
    not_before = datetime.fromisoformat(job["not_before"].replace("Z", "+00:00")).timestamp()
    assert at >= not_before
    assert at - asked < 2.5 + 1.5
    assert envelope["id"] == job["id"]


async def test_large_payload_round_trips_through_the_blob_store(stack: Stack):
    payload = {"document": "x" * 10_000, "n": 7}
    response = await stack.client.post("/jobs", json={"type": "email", "payload": payload})
    assert response.status_code == 202
    async with channel(stack.settings) as ch:
        queue = await ch.get_queue("taskq.email", ensure=False)
        message = await queue.get(timeout=5)
        envelope = decode(message.body)
        await message.ack()
    assert envelope.payload is None
    assert envelope.payload_ref is not None
    assert len(message.body) < 2048
    blobs = open_blob_store(
        stack.env["TASKQ_BLOB_URL"],
        endpoint_url=stack.env.get("TASKQ_S3_ENDPOINT_URL"),
        access_key=stack.env.get("AWS_ACCESS_KEY_ID"),
        secret_key=stack.env.get("AWS_SECRET_ACCESS_KEY"),
    )
    try:
        assert orjson.loads(await blobs.get(envelope.payload_ref)) == payload
    finally:
        await blobs.close()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def amqp_reachable(settings) -> bool:
    try:
        async with channel(settings):
            return True
    except Exception:
        return False


@pytest.mark.broker_admin
async def test_503_with_retry_after_while_the_broker_is_stopped(applied, tmp_path: Path):
    env = {
        "TASKQ_AMQP_URL": applied.amqp_url.get_secret_value(),
        "TASKQ_CONFIRM_TIMEOUT": "2",
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
    }
    async with running(env) as client:
        assert (await client.post("/jobs", json={"type": "email"})).status_code == 202
        rabbitmqctl("stop_app")
        try:
            started = time.monotonic()
            down = await client.post(
                "/jobs", json={"type": "email"}, headers={"Idempotency-Key": "k"}
            )
            took = time.monotonic() - started
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"] == "5"
            assert took < 10
            assert (await client.get("/readyz")).status_code == 503
            assert (await client.get("/jobs", params={"limit": 5})).status_code == 200
        finally:
            rabbitmqctl("start_app")
            await eventually(lambda: amqp_reachable(applied), within=60)

        # The robust connection comes back, and so does the API; the key was released.
        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, within=30)
        again = await client.post("/jobs", json={"type": "email"}, headers={"Idempotency-Key": "k"})
        assert again.status_code == 202
        assert "idempotent-replayed" not in again.headers


async def test_every_status_code_on_the_real_stack(stack: Stack):
    client = stack.client
    created = await client.post(
        "/jobs", json={"type": "email", "delay": 60}, headers={"Idempotency-Key": "s-1"}
    )
    assert created.status_code == 202
    job = created.json()
    replay = await client.post(
        "/jobs", json={"type": "email", "delay": 60}, headers={"Idempotency-Key": "s-1"}
    )
    assert (replay.status_code, replay.headers["idempotent-replayed"]) == (202, "true")
    assert replay.json()["id"] == job["id"]
    statuses = {
        "mismatch": await client.post(
            "/jobs", json={"type": "email"}, headers={"Idempotency-Key": "s-1"}
        ),
        "unknown type": await client.post("/jobs", json={"type": "sms"}),
        "priority": await client.post("/jobs", json={"type": "email", "priority": 9}),
        "content type": await client.post(
            "/jobs", content=b"{}", headers={"Content-Type": "text/plain"}
        ),
        "too large": await client.post(
            "/jobs",
            content=b"[" + b" " * (2 * 1024 * 1024) + b"]",
            headers={"Content-Type": "application/json"},
        ),
        "not found": await client.get("/jobs/nope"),
        "bad filter": await client.get("/jobs", params={"status": "finished"}),
    }
    assert {name: r.status_code for name, r in statuses.items()} == {
        "mismatch": 422,
        "unknown type": 422,
        "priority": 422,
        "content type": 415,
        "too large": 413,
        "not found": 404,
        "bad filter": 422,
    }
    assert (await client.delete(f"/jobs/{job['id']}")).status_code == 200
    assert (await client.delete(f"/jobs/{job['id']}")).status_code == 409
    batch = await client.post("/jobs/batch", json={"jobs": [{"type": "email"}, {"type": "sms"}]})
    assert batch.status_code == 207
    assert [r["status"] for r in batch.json()["results"]] == [202, 422]
