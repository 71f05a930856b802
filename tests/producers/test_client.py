"""AsyncClient and SyncClient against RabbitMQ, a SQLite job store and a local blob directory."""

import asyncio
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from producers.client import AsyncClient, SyncClient
from producers.submit import JobRequest
from tests.broker import channel, depth, next_message
from topology.envelope import Envelope, decode
from topology.errors import (
    BrokerUnavailableError,
    JobNotFoundError,
    JobRejectedError,
    UnknownJobTypeError,
)
from topology.settings import BrokerSettings

pytestmark = pytest.mark.rabbitmq

BIG = {"blob": "x" * 5000}  # above the 1 KiB claim-check threshold the env sets


@pytest.fixture
def env(applied: BrokerSettings, tmp_path: Path) -> dict[str, str]:
    """Configure a client the way a deployment does: TASKQ_* variables only."""
    return {
        "TASKQ_AMQP_URL": applied.amqp_url.get_secret_value(),
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "TASKQ_CLAIM_CHECK_BYTES": "1024",
    }


async def drain(settings: BrokerSettings, queue: str) -> list[Envelope]:
    """Return (and ack) every envelope waiting in ``queue``."""
    out = []
    async with channel(settings) as ch:
        for _ in range(await depth(ch, queue)):
            message = await next_message(ch, queue)
            out.append(decode(message.body))
            await message.ack()
    return out


def blob_path(job: dict) -> Path:
    return Path(urlsplit(job["payload_ref"]["uri"]).path)


async def test_async_submit_lands_in_the_group_queue_and_status_says_queued(applied, env):
    async with await AsyncClient.connect(env) as client:
        job = await client.submit("email.welcome", {"to": "a@example.com"}, priority="high")
        assert job["status"] == "queued"
        assert job["priority"] == "high"
        assert job["replayed"] is False
        assert await client.status(job["id"]) == {k: v for k, v in job.items() if k != "replayed"}
    [envelope] = await drain(applied, "taskq.email")
    assert envelope.id == job["id"]
    assert envelope.payload == {"to": "a@example.com"}


async def test_async_same_idempotency_key_twice_is_one_job_and_the_second_is_replayed(applied, env):
    async with await AsyncClient.connect(env) as client:
        first = await client.submit("email", {"n": 1}, idempotency_key="k-1")
        second = await client.submit("email", {"n": 1}, idempotency_key="k-1")
    assert second["id"] == first["id"]
    assert (first["replayed"], second["replayed"]) == (False, True)
    assert [e.id for e in await drain(applied, "taskq.email")] == [first["id"]]


async def test_async_unknown_job_type_and_unknown_job_id_raise(env):
    async with await AsyncClient.connect(env) as client:
        with pytest.raises(UnknownJobTypeError, match=r"nobody\.takes\.this"):
            await client.submit("nobody.takes.this")
        with pytest.raises(JobNotFoundError):
            await client.status("no-such-job")


async def test_async_invalid_field_is_rejected_like_the_http_api_rejects_it(env):
    async with await AsyncClient.connect(env) as client:
        with pytest.raises(JobRejectedError, match="max_attempts") as caught:
            await client.submit("email", max_attempts=0)
    assert caught.value.field == "max_attempts"


async def test_async_submit_many_reports_each_item_in_order(applied, env):
    requests = [
        JobRequest("email", {"n": 1}),
        JobRequest("nobody.takes.this"),
        JobRequest("email", {"n": 2}, max_attempts=0),
        JobRequest("job.a", {"n": 3}),
    ]
    async with await AsyncClient.connect(env) as client:
        results = await client.submit_many(requests)
        assert [type(r) for r in results] == [dict, UnknownJobTypeError, JobRejectedError, dict]
        assert all(r["status"] == "queued" for r in results if isinstance(r, dict))
    assert [e.payload for e in await drain(applied, "taskq.email")] == [{"n": 1}]
    assert [e.payload for e in await drain(applied, "taskq.default")] == [{"n": 3}]


async def test_async_large_payload_is_claim_checked_and_the_message_carries_only_the_ref(
    applied, env
):
    async with await AsyncClient.connect(env) as client:
        job = await client.submit("email", BIG)
    assert job["payload_ref"]["size"] == len(orjson.dumps(BIG))
    assert orjson.loads(blob_path(job).read_bytes()) == BIG
    [envelope] = await drain(applied, "taskq.email")
    assert envelope.payload is None
    assert envelope.payload_ref is not None
    assert envelope.payload_ref.model_dump() == job["payload_ref"]


def test_sync_client_has_the_same_semantics(applied, env):
    with SyncClient(env) as client:
        job = client.submit("email.welcome", {"to": "a@example.com"}, priority="high")
        assert (job["status"], job["priority"], job["replayed"]) == ("queued", "high", False)
        assert client.status(job["id"])["status"] == "queued"
        again = client.submit("email", {"n": 1}, idempotency_key="k-1")
        replay = client.submit("email", {"n": 1}, idempotency_key="k-1")
        assert (replay["id"], replay["replayed"]) == (again["id"], True)
        with pytest.raises(UnknownJobTypeError):
            client.submit("nobody.takes.this")
        with pytest.raises(JobNotFoundError):
            client.status("no-such-job")
        results = client.submit_many([JobRequest("job.a", {"n": 3}), JobRequest("nope")])
        assert [type(r) for r in results] == [dict, UnknownJobTypeError]
        big = client.submit("email", BIG)
    assert orjson.loads(blob_path(big).read_bytes()) == BIG
    email = asyncio.run(drain(applied, "taskq.email"))
    assert [e.id for e in email] == [job["id"], again["id"], big["id"]]
    assert (email[2].payload, email[2].payload_ref.model_dump()) == (None, big["payload_ref"])
    assert [e.payload for e in asyncio.run(drain(applied, "taskq.default"))] == [{"n": 3}]


def test_a_sync_submit_leaves_its_row_written_for_other_processes(applied, env, tmp_path):
    # The private loop is idle between calls, so a row held to share a transaction would
    # wait for the next call; each submitting call writes its rows before it returns.
    with SyncClient(env) as client:
        job = client.submit("email", {"n": 1})
        [other] = client.submit_many([JobRequest("email", {"n": 2})])
        assert isinstance(other, dict)
        with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
            rows = db.execute("SELECT id, status FROM jobs ORDER BY id").fetchall()
    assert rows == [(job["id"], "queued"), (other["id"], "queued")]


def test_sync_client_calls_after_close_fail_clearly(env):
    client = SyncClient(env)
    client.close()
    client.close()  # closing twice does nothing
    with pytest.raises(RuntimeError, match="closed"):
        client.status("any")


async def test_sync_client_refuses_to_run_inside_an_event_loop(env):
    with pytest.raises(RuntimeError, match="AsyncClient"):
        SyncClient(env)
    # Built in a thread without a loop, it still refuses calls made from this loop's thread.
    client = await asyncio.to_thread(SyncClient, env)
    try:
        with pytest.raises(RuntimeError, match="AsyncClient"):
            client.status("any")
        with pytest.raises(JobNotFoundError):
            await asyncio.to_thread(client.status, "any")
    finally:
        await asyncio.to_thread(client.close)


@pytest.fixture
def env_without_broker(env: dict[str, str]) -> dict[str, str]:
    return {**env, "TASKQ_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}


async def test_async_client_without_a_broker_raises_broker_unavailable(env_without_broker):
    with pytest.raises(BrokerUnavailableError):
        await AsyncClient.connect(env_without_broker)


def test_sync_client_without_a_broker_raises_broker_unavailable(env_without_broker):
    with pytest.raises(BrokerUnavailableError, match=r"amqp://guest:\*\*\*@127\.0\.0\.1:1/"):
        SyncClient(env_without_broker)
