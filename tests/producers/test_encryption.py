"""Payloads and results sealed at rest: API -> broker -> worker -> store, SQLite and PostgreSQL, S3 blobs.

Each test looks at the raw bytes behind taskq's back (the queued message bodies, the store's
rows, the S3 objects) for the plaintext, and sends altered or foreign ciphertext to a worker.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from consumers.dlq import DeadFilter, listing
from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from jobstore.model import JobStatus
from jobstore.sqlite import SqliteJobStore
from producers.backends import confirmed, open_backends
from producers.publisher import ConfirmedPublisher
from producers.submit import JobRequest, Submitter
from taskctl.cli import app as taskctl
from tests.broker import channel, next_message
from tests.fakes.blobs import InMemoryBlobStore
from tests.helpers import eventually
from tests.s3server import s3_client
from tests.security.stack import Stack, running, stack_env
from tests.security.stack import store_url as fresh_store
from topology.broker import connect
from topology.envelope import Envelope, decode
from topology.sealing import Sealer, new_key, token_of
from topology.settings import BrokerSettings, SubmitSettings, WorkerSettings, load_settings

pytestmark = pytest.mark.rabbitmq

SECRET = "4111-1111-1111-1111"
K1, K2 = f"k1:{new_key()}", f"k2:{new_key()}"


def sealer(keys: str) -> Sealer:
    """Return the sealer of a ``TASKQ_DATA_KEYS`` value."""
    return load_settings({"TASKQ_DATA_KEYS": keys}).encryption.sealer()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sealed(
    request: pytest.FixtureRequest,
    vhost: BrokerSettings,
    tmp_path: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Stack]:
    """Yield the API with data key k1, on a fresh store of each kind and an S3 bucket of its own."""
    bucket = f"taskq-{uuid.uuid4().hex[:10]}"
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # boto3 reads the process's
        monkeypatch.setenv(name, "test")
    async with fresh_store(request.param, request, tmp_path) as url:
        env = stack_env(vhost, tmp_path, url) | {
            "TASKQ_DATA_KEYS": K1,
            "TASKQ_CLAIM_CHECK_BYTES": "1024",
            "TASKQ_BLOB_URL": f"s3://{bucket}/blobs",
            "TASKQ_S3_ENDPOINT_URL": s3_endpoint,
        }
        async with running(env, vhost) as stack:
            yield stack


@asynccontextmanager
async def worker(stack: Stack, keys: str) -> AsyncIterator[Callable[[Envelope], Any]]:
    """Run the ``work`` group's worker holding ``keys``; yield a publish of raw envelopes."""
    settings = load_settings({**os.environ, **stack.env, "TASKQ_DATA_KEYS": keys})
    backends = await open_backends(settings)
    publisher = await confirmed("sealed test")(backends)
    registry = HandlerRegistry()

    @registry.handler("work.#")
    async def work(payload: object, ctx: JobContext) -> dict[str, object]:
        return {"echo": payload}

    deps = Deps(
        backends.topology,
        backends.topology.group("work"),
        registry,
        backends.store,
        backends.blobs,
        publisher,
        WorkerSettings(grace=5),
        sealer=backends.sealer,
    )
    running_worker = Worker(deps)
    await running_worker.start(settings.broker)
    try:
        yield publisher.publish
    finally:
        await running_worker.stop(grace=2)
        await publisher.close()
        await backends.close()


async def submit(stack: Stack, payload: object, key: str | None = None) -> str:
    headers = {"Idempotency-Key": key} if key else {}
    response = await stack.client.post(
        "/jobs", json={"type": "work.a", "payload": payload}, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def queued_bodies(stack: Stack) -> list[bytes]:
    """Return the bodies waiting on the work queue, leaving them there."""
    bodies = []
    async with channel(stack.broker) as ch:
        queue = await ch.get_queue("taskq.work", ensure=False)
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            bodies.append(message.body)
    return bodies  # unacked: closing the channel put them back


async def taskctl_run(env: dict[str, str], *command: str) -> Result:
    """Run ``taskctl`` with ``env`` (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, taskctl, list(command), env=env)


async def finished(stack: Stack, job_id: str) -> dict[str, Any]:
    async def done() -> bool:
        got = (await stack.client.get(f"/jobs/{job_id}")).json()
        return bool(got["status"] == "succeeded")

    await eventually(done, within=20, every=0.05)
    return dict((await stack.client.get(f"/jobs/{job_id}")).json())


async def test_payloads_and_results_are_ciphertext_in_the_broker_store_and_blobs(sealed: Stack):
    small = {"card": SECRET}
    large = {"card": SECRET, "pad": "x" * 4000}  # above TASKQ_CLAIM_CHECK_BYTES: an S3 blob
    ids = [await submit(sealed, small), await submit(sealed, small, "key-1")]
    ids.append(await submit(sealed, large, "key-2"))

    bodies = await queued_bodies(sealed)
    assert len(bodies) == 3
    for body in bodies:
        assert SECRET.encode() not in body
        envelope = decode(body)  # routing metadata stays clear
        assert envelope.type == "work.a"
        assert envelope.id in ids
        assert envelope.payload is None
        assert (envelope.payload_enc is None) == (envelope.id == ids[2])
    bucket, prefix = sealed.env["TASKQ_BLOB_URL"].removeprefix("s3://").split("/", 1)
    s3 = s3_client(sealed.env["TASKQ_S3_ENDPOINT_URL"])
    objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert len(objects) == 1
    blob = s3.get_object(Bucket=bucket, Key=objects[0]["Key"])["Body"].read()
    assert blob.startswith(b"k1:")
    assert SECRET.encode() not in blob

    async with worker(sealed, K1):
        views = [await finished(sealed, job_id) for job_id in ids]
    assert [v["result"] for v in views] == [{"echo": small}, {"echo": small}, {"echo": large}]
    for job in await sealed.jobs():  # the rows as the store holds them
        assert SECRET.encode() not in orjson.dumps(job.payload)
        assert SECRET.encode() not in orjson.dumps(job.result)
        assert str(token_of(job.result)).startswith("k1:")
        assert (token_of(job.payload) is None) == (job.id == ids[2])


async def test_an_altered_or_foreign_ciphertext_is_dead_lettered_as_contract(sealed: Stack):
    honest = await submit(sealed, {"card": SECRET})
    k1 = sealer(K1)
    token = k1.seal("forged-1", b'{"card":"x"}')
    raw = bytearray(base64.b64decode(token[3:]))
    raw[20] ^= 0x01  # one byte of the ciphertext
    altered = "k1:" + base64.b64encode(bytes(raw)).decode()
    [body] = await queued_bodies(sealed)
    moved = decode(body).payload_enc  # the honest job's ciphertext, under another id
    unknown = sealer(K2).seal("forged-3", b"{}")  # a key the worker does not hold
    forged = [("forged-1", altered), ("forged-2", moved), ("forged-3", unknown)]

    async with worker(sealed, K1) as publish:
        for job_id, sealed_payload in forged:
            await publish(Envelope.new("work.a", id=job_id, payload_enc=sealed_payload))
        assert (await finished(sealed, honest))["result"] == {"echo": {"card": SECRET}}

        async def dead_lettered() -> bool:
            return (await sealed.depths())["taskq.work.dlq"] == 3

        await eventually(dead_lettered, within=20, every=0.05)
    async with await connect(sealed.broker, name="dlq check") as connection:
        page = await listing(connection, sealed.topology.group("work"), DeadFilter())
    letters = {letter.job_id: letter for letter in page.letters}
    assert {letter.reason for letter in page.letters} == {"contract"}
    assert "forged-1 does not open under data key 'k1': it was altered" in letters["forged-1"].error
    assert "forged-2 does not open under data key 'k1'" in letters["forged-2"].error
    assert "sealed under data key 'k2', which this process does not hold" in (
        letters["forged-3"].error
    )


async def test_rotation_old_key_opens_new_key_seals_and_rotate_data_retires_the_old(
    sealed: Stack,
):
    before = await submit(sealed, {"card": SECRET}, "key-1")  # sealed under k1
    rotated = f"{K2},{K1}"
    async with worker(sealed, rotated):

        async def done() -> bool:
            return [job.status for job in await sealed.jobs()] == [JobStatus.SUCCEEDED]

        await eventually(done, within=20, every=0.05)
    [job] = await sealed.jobs()
    assert str(token_of(job.payload)).startswith("k1:")
    assert str(token_of(job.result)).startswith("k2:")  # the worker seals with the first key
    # The API still holds only k1: it says so rather than show ciphertext or fail blindly.
    refused = await sealed.client.get(f"/jobs/{before}")
    assert refused.status_code == 422
    assert "sealed under data key 'k2', which this process does not hold" in refused.text

    env = {**sealed.env, "TASKQ_DATA_KEYS": rotated}
    result = await taskctl_run(env, "keys", "rotate-data", "--batch", "1")
    assert result.exit_code == 0, result.output
    assert "re-sealed 1 values of 1 jobs under data key k2; 0 could not be opened" in result.output
    [job] = await sealed.jobs()
    only_new = sealer(K2)
    for what in ("payload", "result"):
        token = str(token_of(getattr(job, what)))
        assert token.startswith("k2:")
        assert SECRET.encode() in only_new.open(job.id, token, what)
    env["TASKQ_DATA_KEYS"] = K2  # the old key retired: taskctl reads the job opened
    shown = await taskctl_run(env, "status", before, "--json")
    assert orjson.loads(shown.output)["result"] == {"echo": {"card": SECRET}}

    # Without the key that sealed a row, rotate-data says which rows it could not open.
    env["TASKQ_DATA_KEYS"] = f"k3:{new_key()}"
    refused = await taskctl_run(env, "keys", "rotate-data")
    assert refused.exit_code == 1
    assert "2 could not be opened" in refused.output
    assert "sealed under data key 'k2', which this process does not hold" in refused.output


async def test_the_repair_sweep_republishes_the_stored_ciphertext(applied, topology, tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    await store.migrate()
    k1 = sealer(K1)
    async with await ConfirmedPublisher.connect(applied, topology) as publisher:
        submitter = Submitter(
            topology, publisher, store, InMemoryBlobStore(), SubmitSettings(), sealer=k1
        )
        # Stored as a submitter stores a keyed job, then a crash before its publish.
        prepared = await submitter._prepare(
            JobRequest("email", {"card": SECRET}, idempotency_key="k"), submitter.clock(), None
        )
        await store.create_jobs([replace(submitter._new_job(prepared), confirm_within=0)])
        assert await submitter.repair() == 1
        await submitter.close()
    await store.close()
    async with channel(applied) as ch:
        message = await next_message(ch, "taskq.email")
        await message.ack()
    assert SECRET.encode() not in message.body
    envelope = decode(message.body)
    assert envelope.payload_enc is not None
    assert orjson.loads(k1.open(envelope.id, envelope.payload_enc)) == {"card": SECRET}
