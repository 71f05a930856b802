"""The gRPC job API on the real stack: a real server and client over loopback, RabbitMQ, SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from consumers.handlers import HandlerRegistry, JobContext
from consumers.worker import Deps, Worker
from jobstore.model import JobRecord, JobStatus
from producers.api.app import Services
from producers.auth.principal import Scope
from producers.grpc_api.v1 import jobs_pb2 as pb
from producers.grpc_api.v1 import jobs_pb2_grpc
from producers.submit import JobRequest
from taskctl.assembly import api_services, with_grpc
from tests.broker import channel, depth
from tests.credentials import issue_key
from tests.faultproxy import FaultProxy
from tests.helpers import create_job, eventually
from topology.settings import BrokerSettings, WorkerSettings, load_settings

pytestmark = pytest.mark.rabbitmq
Code = grpc.StatusCode


@dataclass
class Door:
    stub: jobs_pb2_grpc.JobsStub
    channel: grpc.aio.Channel
    services: Services
    registry: CollectorRegistry
    token: str  # every scope, tenant default
    env: dict[str, str]
    proxy: FaultProxy

    def auth(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.token}"),)

    def count(self, method: str, code: str) -> float:
        labels = {"method": method, "code": code}
        return self.registry.get_sample_value("taskq_grpc_requests_total", labels) or 0.0


@asynccontextmanager
async def serving(applied: BrokerSettings, tmp_path: Path, **extra: str) -> AsyncIterator[Door]:
    """Serve the API's services over gRPC on a free port, the broker reached through a proxy."""
    proxy = FaultProxy(("127.0.0.1", 5672))
    proxy.start()
    try:
        url = applied.amqp_url.get_secret_value().replace(":5672/", f":{proxy.port}/")
        env = {
            "TASKQ_AMQP_URL": url,
            "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
            "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
            "TASKQ_CONFIRM_TIMEOUT": "3",
            "TASKQ_RETENTION_SWEEP_INTERVAL": "0",
            **extra,
        }
        settings = load_settings(env)
        registry = CollectorRegistry()
        services = await api_services(settings, registry)
        try:
            server = await with_grpc(services, settings, registry, port=0)
            token = await issue_key(services.submitter.store)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
                yield Door(jobs_pb2_grpc.JobsStub(ch), ch, services, registry, token, env, proxy)
        finally:
            assert services.close is not None
            await services.close()
    finally:
        await asyncio.to_thread(proxy.stop)  # it runs a loop of its own: not on this thread


@pytest.fixture
async def door(applied: BrokerSettings, tmp_path: Path) -> AsyncIterator[Door]:
    async with serving(applied, tmp_path) as opened:
        yield opened


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_every_unary_method_works_as_post_jobs_does(door: Door, applied: BrokerSettings):
    stub, auth = door.stub, door.auth()
    # Submit: answered once confirmed; the message is on the group's queue, the row in the store.
    done = await stub.Submit(
        pb.SubmitRequest(type="email", payload_json=b'{"to": "a@example.com"}'), metadata=auth
    )
    assert done.job.status == pb.STATUS_QUEUED
    assert not done.replayed
    async with channel(applied) as ch:
        assert await depth(ch, "taskq.email") == 1
    got = await stub.Get(pb.GetRequest(id=done.job.id), metadata=auth)
    assert (got.id, got.type, got.tenant, got.priority) == (
        done.job.id,
        "email",
        "default",
        pb.PRIORITY_MEDIUM,
    )
    # A delayed job, with every option, read back as it was asked for.
    delayed = pb.SubmitRequest(
        type="email",
        priority=pb.PRIORITY_URGENT,
        delay_seconds=60,
        max_attempts=3,
        idempotency_key="welcome-1",
        correlation_id="order-9",
    )
    job = (await stub.Submit(delayed, metadata=auth)).job
    assert job.status == pb.STATUS_SCHEDULED
    assert job.HasField("not_before")
    assert (job.priority, job.max_attempts, job.idempotency_key, job.correlation_id) == (
        pb.PRIORITY_URGENT,
        3,
        "welcome-1",
        "order-9",
    )
    # The same key and request: the stored answer, replayed; another request: ALREADY_EXISTS.
    again = await stub.Submit(delayed, metadata=auth)
    assert again.replayed
    assert again.job.id == job.id
    assert again.job.HasField("not_before")
    other = await refused(
        stub.Submit(pb.SubmitRequest(type="email", idempotency_key="welcome-1"), metadata=auth)
    )
    assert other.code() is Code.ALREADY_EXISTS
    assert "different request" in other.details()
    # List: newest first, filtered by status, one page at a time.
    page = await stub.List(pb.ListRequest(limit=1), metadata=auth)
    assert [j.id for j in page.jobs] == [job.id]
    assert page.next_cursor
    rest = await stub.List(pb.ListRequest(cursor=page.next_cursor), metadata=auth)
    assert [j.id for j in rest.jobs] == [done.job.id]
    assert not rest.next_cursor
    scheduled = await stub.List(pb.ListRequest(status=pb.STATUS_SCHEDULED), metadata=auth)
    assert [j.id for j in scheduled.jobs] == [job.id]
    # Cancel: a job not started; once cancelled, FAILED_PRECONDITION; unknown ids NOT_FOUND.
    cancelled = await stub.Cancel(pb.CancelRequest(id=job.id), metadata=auth)
    assert cancelled.status == pb.STATUS_CANCELLED
    assert cancelled.HasField("finished_at")
    twice = await refused(stub.Cancel(pb.CancelRequest(id=job.id), metadata=auth))
    assert twice.code() is Code.FAILED_PRECONDITION
    assert "cancelled" in twice.details()
    for call in (stub.Get(pb.GetRequest(id="nope"), metadata=auth),):
        assert (await refused(call)).code() is Code.NOT_FOUND
    assert door.count("Submit", "OK") == 3
    assert door.count("Submit", "ALREADY_EXISTS") == 1
    assert door.count("Cancel", "FAILED_PRECONDITION") == 1


async def test_a_batch_answers_each_job_in_order(door: Door):
    jobs = [
        pb.SubmitRequest(type="email"),
        pb.SubmitRequest(type="nobody.takes.this"),
        pb.SubmitRequest(type="email", payload_json=b"{not json"),
        pb.SubmitRequest(type="taskq.callback"),
        pb.SubmitRequest(type="job.thing", priority=pb.PRIORITY_LOW, idempotency_key="b-1"),
    ]
    answer = await door.stub.SubmitBatch(pb.SubmitBatchRequest(jobs=jobs), metadata=door.auth())
    assert (answer.accepted, answer.rejected) == (2, 3)
    outcomes = [r.WhichOneof("outcome") for r in answer.results]
    assert outcomes == ["job", "problem", "problem", "problem", "job"]
    problems = [r.problem for r in answer.results if r.HasField("problem")]
    assert [p.code for p in problems] == [
        Code.INVALID_ARGUMENT.value[0],
        Code.INVALID_ARGUMENT.value[0],
        Code.PERMISSION_DENIED.value[0],
    ]
    assert "unknown job type" in problems[0].message
    assert problems[0].field == "type"
    assert problems[1].field == "payload_json"
    assert "reserved" in problems[2].message
    assert answer.results[4].job.priority == pb.PRIORITY_LOW
    again = await door.stub.SubmitBatch(pb.SubmitBatchRequest(jobs=jobs[4:]), metadata=door.auth())
    assert again.results[0].replayed
    assert again.results[0].job.id == answer.results[4].job.id
    too_many = pb.SubmitBatchRequest(jobs=[pb.SubmitRequest(type="email")] * 501)
    refusal = await refused(door.stub.SubmitBatch(too_many, metadata=door.auth()))
    assert refusal.code() is Code.INVALID_ARGUMENT
    assert "at most 500" in refusal.details()


async def test_credentials_and_input_errors_map_to_standard_codes(door: Door):
    stub, store = door.stub, door.services.submitter.store
    reader = await issue_key(store, scopes=(Scope.JOBS_READ,))
    narrow = await issue_key(store, job_types=("job.#",))
    cases: list[tuple[Any, Code, str]] = [
        (stub.Get(pb.GetRequest(id="x")), Code.UNAUTHENTICATED, "Authorization"),
        (stub.Get(pb.GetRequest(id="x"), metadata=door.auth("tq_nope")), Code.UNAUTHENTICATED, ""),
        (
            stub.Submit(pb.SubmitRequest(type="email"), metadata=door.auth(reader)),
            Code.PERMISSION_DENIED,
            "jobs:write",
        ),
        (
            stub.Submit(pb.SubmitRequest(type="email"), metadata=door.auth(narrow)),
            Code.PERMISSION_DENIED,
            "job.#",
        ),
        (
            stub.Submit(pb.SubmitRequest(type="taskq.callback"), metadata=door.auth()),
            Code.PERMISSION_DENIED,
            "reserved",
        ),
        (
            stub.Submit(pb.SubmitRequest(type="no.group"), metadata=door.auth()),
            Code.INVALID_ARGUMENT,
            "unknown job type",
        ),
        (
            stub.Submit(pb.SubmitRequest(type="email", delay_seconds=-1), metadata=door.auth()),
            Code.INVALID_ARGUMENT,
            "delay",
        ),
        (
            stub.Submit(pb.SubmitRequest(type="email", priority=9), metadata=door.auth()),  # type: ignore[arg-type]
            Code.INVALID_ARGUMENT,
            "priority",
        ),
        (
            stub.Submit(
                pb.SubmitRequest(type="email", payload_json=b'"' + b"x" * 1_100_000 + b'"'),
                metadata=door.auth(),
            ),
            Code.RESOURCE_EXHAUSTED,
            "TASKQ_MAX_BODY_BYTES",
        ),
        (
            stub.List(pb.ListRequest(limit=501), metadata=door.auth()),
            Code.INVALID_ARGUMENT,
            "1-500",
        ),
    ]
    for call, code, words in cases:
        refusal = await refused(call)
        assert (refusal.code(), words in refusal.details()) == (code, True), refusal.details()
    # A key whose request is still being submitted elsewhere: ABORTED, to be retried.
    busy = JobRequest(type="email", idempotency_key="busy", source="grpc")
    job = JobRecord("held", "email", JobStatus.QUEUED, busy.priority, *(2 * [_now()]))
    await create_job(store, job, claim=(str(busy.claim_key()), busy.fingerprint()))
    held = await refused(
        stub.Submit(pb.SubmitRequest(type="email", idempotency_key="busy"), metadata=door.auth())
    )
    assert held.code() is Code.ABORTED
    assert "still in progress" in held.details()
    # The broker gone: UNAVAILABLE, and the health check says NOT_SERVING.
    health = health_pb2_grpc.HealthStub(door.channel)
    check = health_pb2.HealthCheckRequest(service="taskq.v1.Jobs")
    assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
    assert door.services.publisher is not None
    await door.services.publisher.close()
    down = await refused(stub.Submit(pb.SubmitRequest(type="email"), metadata=door.auth()))
    assert down.code() is Code.UNAVAILABLE
    assert "retry later" in down.details()

    async def not_serving() -> bool:
        return (await health.Check(check)).status == health_pb2.HealthCheckResponse.NOT_SERVING

    await eventually(not_serving, within=5)


async def test_a_used_up_rate_is_resource_exhausted_with_retry_after(applied, tmp_path: Path):
    async with serving(applied, tmp_path, TASKQ_RATE_LIMIT="1", TASKQ_RATE_BURST="2") as door:
        calls = [door.stub.List(pb.ListRequest(), metadata=door.auth()) for _ in range(2)]
        await asyncio.gather(*calls)
        refusal = await refused(door.stub.List(pb.ListRequest(), metadata=door.auth()))
        assert refusal.code() is Code.RESOURCE_EXHAUSTED
        assert ("retry-after", "1") in tuple(refusal.trailing_metadata() or ())


async def test_a_submission_past_its_deadline_still_lands_once(door: Door):
    stub, auth = door.stub, door.auth()
    request = pb.SubmitRequest(type="email", idempotency_key="slow-1")
    door.proxy.stall()  # the broker's confirm cannot come back for now
    late = await refused(stub.Submit(request, metadata=auth, timeout=0.5))
    assert late.code() is Code.DEADLINE_EXCEEDED
    door.proxy.resume()
    # The submission went on behind the deadline: the retry with its key replays that job.

    async def replayed() -> bool:
        try:
            return bool((await stub.Submit(request, metadata=auth, timeout=5)).replayed)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not Code.ABORTED:  # ABORTED: the first copy is still being confirmed
                raise
            return False

    await eventually(replayed, within=10)
    page = await stub.List(pb.ListRequest(), metadata=auth)
    assert [j.idempotency_key for j in page.jobs] == ["slow-1"]


async def test_watch_sees_a_job_through_to_success(door: Door):
    settings = load_settings(door.env)
    handlers = HandlerRegistry()

    @handlers.handler("email")
    async def send(payload: Any, ctx: JobContext) -> dict[str, Any]:
        return {"sent": payload}

    submitter = door.services.submitter
    assert door.services.publisher is not None
    worker = Worker(
        Deps(
            submitter.topology,
            submitter.topology.group("email"),
            handlers,
            submitter.store,
            door.services.submitter._blobs,
            door.services.publisher,
            WorkerSettings(grace=2),
            submitter,
        )
    )
    await worker.start(settings.broker)
    try:
        by_type = door.stub.Watch(pb.WatchRequest(type="email"), metadata=door.auth())
        await asyncio.sleep(0)
        done = await door.stub.Submit(
            pb.SubmitRequest(type="email", payload_json=b'"hi"', delay_seconds=1),
            metadata=door.auth(),
        )
        events = [
            e
            async for e in door.stub.Watch(
                pb.WatchRequest(job_id=done.job.id), metadata=door.auth()
            )
        ]
        statuses = [e.status for e in events]
        assert statuses[0] == pb.STATUS_SCHEDULED
        assert statuses[-1] == pb.STATUS_SUCCEEDED
        assert orjson.loads(events[-1].result_json) == {"sent": "hi"}
        async with asyncio.timeout(5):
            async for event in by_type:
                if event.id == done.job.id and event.status == pb.STATUS_SUCCEEDED:
                    break
        by_type.cancel()
        unknown = await refused(
            _first(door.stub.Watch(pb.WatchRequest(job_id="nope"), metadata=door.auth()))
        )
        assert unknown.code() is Code.NOT_FOUND
    finally:
        await worker.stop(grace=2)


async def test_a_watch_quiet_for_the_idle_timeout_ends_cleanly(applied, tmp_path: Path):
    async with serving(applied, tmp_path, TASKQ_WS_IDLE_TIMEOUT="0.5") as door:
        done = await door.stub.Submit(pb.SubmitRequest(type="email"), metadata=door.auth())
        started = time.monotonic()
        by_job = door.stub.Watch(pb.WatchRequest(job_id=done.job.id), metadata=door.auth())
        events = [event async for event in by_job]  # no worker: it stays queued
        assert [e.status for e in events] == [pb.STATUS_QUEUED]
        assert await by_job.code() is Code.OK
        by_type = door.stub.Watch(pb.WatchRequest(type="email"), metadata=door.auth())
        assert [event async for event in by_type] == []
        assert await by_type.code() is Code.OK
        assert 1.0 <= time.monotonic() - started < 5
        assert door.count("Watch", "OK") == 2


async def test_health_and_reflection_describe_the_service(door: Door):
    health = health_pb2_grpc.HealthStub(door.channel)
    for name in ("", "taskq.v1.Jobs"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(door.channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="taskq.v1.Jobs"),
    ]
    replies = [r async for r in reflection.ServerReflectionInfo(iter(asks))]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"taskq.v1.Jobs", "grpc.health.v1.Health"} <= names
    proto = descriptor_pb2.FileDescriptorProto.FromString(
        replies[1].file_descriptor_response.file_descriptor_proto[0]
    )
    assert proto.package == "taskq.v1"
    assert [m.name for m in proto.service[0].method] == [
        "Submit",
        "SubmitBatch",
        "Get",
        "List",
        "Cancel",
        "Watch",
    ]


async def _first(stream: Any) -> Any:
    async for item in stream:
        return item
    return None


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
