"""The worker on the real broker: success, retries, dead letters, poison, cancel, delays, dedup."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson
import pytest
from aiormq.abc import AbstractChannel
from pydantic import SecretStr

from consumers.delivery_route import Sink, route_deliveries
from consumers.dispatch import ATTEMPTS_HEADER, ERROR_HEADER, REASON_HEADER
from consumers.handlers import JobContext, Permanent
from jobstore.model import JobStatus
from producers.frame_tap import FrameTap
from producers.tenancy import Viewer
from tests.broker import channel, next_message, wait_for_connection
from tests.consumers.rig import TOPOLOGY, Rig, started
from tests.faultproxy import FaultProxy
from tests.helpers import compiled, eventually
from topology.envelope import Envelope, decode
from topology.names import Priority

pytestmark = pytest.mark.rabbitmq


async def test_a_job_runs_once_and_its_result_is_recorded(rig: Rig):
    @rig.registry.handler("mail.send")
    async def send(payload: dict, ctx: JobContext) -> dict:
        rig.runs.append(ctx.job_id)
        return {"sent": payload["to"]}

    job_id = await rig.submit("mail.send", {"to": "a@example.com"})
    await rig.until(job_id, JobStatus.SUCCEEDED)
    job = await rig.store.get_job(job_id)
    assert job.result == {"sent": "a@example.com"}
    assert job.attempts == 1
    assert rig.runs == [job_id]


async def test_a_handler_failing_twice_runs_exactly_three_times(rig: Rig):
    @rig.registry.handler("mail.flaky")
    async def flaky(payload, ctx: JobContext) -> str:
        rig.runs.append(f"attempt {ctx.attempt}")
        if ctx.attempt < 3:
            raise RuntimeError(f"transient {ctx.attempt}")
        return "finally"

    job_id = await rig.submit("mail.flaky")
    await rig.until(job_id, JobStatus.SUCCEEDED)
    assert rig.runs == ["attempt 1", "attempt 2", "attempt 3"]
    assert (await rig.store.get_job(job_id)).attempts == 3


async def test_an_always_failing_job_is_dead_lettered_after_max_attempts(rig: Rig):
    @rig.registry.handler("mail.broken")
    async def broken(payload, ctx: JobContext) -> None:
        rig.runs.append(ctx.job_id)
        raise ValueError("template missing")

    job_id = await rig.submit("mail.broken")
    await rig.until(job_id, JobStatus.DEAD)
    assert len(rig.runs) == 3
    async with channel(rig.settings) as ch:
        dead = await next_message(ch, "taskq.mail.dlq")
    assert decode(dead.body).id == job_id
    assert dead.headers[REASON_HEADER] == "exhausted"
    assert dead.headers[ERROR_HEADER] == "ValueError: template missing"
    assert dead.headers[ATTEMPTS_HEADER] == 3


async def test_permanent_goes_to_the_dlq_at_once(rig: Rig):
    @rig.registry.handler("mail.bounce")
    async def bounce(payload, ctx: JobContext) -> None:
        rig.runs.append(ctx.job_id)
        raise Permanent("no such mailbox")

    job_id = await rig.submit("mail.bounce")
    await rig.until(job_id, JobStatus.DEAD)
    assert len(rig.runs) == 1
    assert (await rig.store.get_job(job_id)).last_error == "Permanent: no such mailbox"


async def test_poison_bytes_and_unhandled_types_are_dead_lettered_at_once(rig: Rig):
    job_id = await rig.submit("mail.nobody")  # routed to the group, but no handler takes it
    await rig.until(job_id, JobStatus.DEAD)
    async with channel(rig.settings) as ch:
        exchange = await ch.get_exchange("taskq.jobs", ensure=False)
        import aio_pika

        await exchange.publish(aio_pika.Message(b"\xff not an envelope"), "mail.garbage")
        first = await next_message(ch, "taskq.mail.dlq")
        second = await next_message(ch, "taskq.mail.dlq")
    reasons = {
        m.headers.get(REASON_HEADER) or m.headers["x-death"][0]["reason"] for m in (first, second)
    }
    assert reasons == {"contract", "rejected"}


async def test_a_cancelled_job_is_acked_without_running(rig: Rig):
    @rig.registry.handler("mail.later")
    async def later(payload, ctx: JobContext) -> None:
        rig.runs.append(ctx.job_id)

    job_id = await rig.submit("mail.later", delay=1)
    await rig.submitter.cancel(job_id, Viewer())
    await asyncio.sleep(2)  # the tier returns it to the queue after 1 s; nothing may run it
    assert rig.runs == []
    assert await rig.status(job_id) is JobStatus.CANCELLED


async def test_a_delayed_job_never_runs_early(rig: Rig):
    started: dict[str, datetime] = {}

    @rig.registry.handler("mail.scheduled")
    async def scheduled(payload, ctx: JobContext) -> None:
        started[ctx.job_id] = datetime.now(UTC)

    job_id = await rig.submit("mail.scheduled", delay=1.6)
    await rig.until(job_id, JobStatus.SUCCEEDED)
    job = await rig.store.get_job(job_id)
    assert started[job_id] >= job.not_before
    assert (started[job_id] - job.not_before).total_seconds() < 1.0


async def test_a_redelivered_done_job_is_acked_without_running_again(rig: Rig):
    @rig.registry.handler("mail.once")
    async def once(payload, ctx: JobContext) -> str:
        rig.runs.append(ctx.job_id)
        return "done"

    job_id = await rig.submit("mail.once")
    await rig.until(job_id, JobStatus.SUCCEEDED)
    # The same message again (a redelivery after a lost ack): its effects happened already.
    envelope = Envelope.new("mail.once", None, id=job_id, idempotency_key=job_id)
    await rig.publisher.publish(envelope)
    await asyncio.sleep(1)
    assert rig.runs == [job_id]


async def test_an_open_breaker_parks_jobs_instead_of_dead_lettering_them(rig: Rig):
    smtp = {"up": False}

    @rig.registry.handler("mail.smtp", depends_on=("smtp",))
    async def send(payload, ctx: JobContext) -> str:
        rig.runs.append(ctx.job_id)
        if not smtp["up"]:
            raise ConnectionError("smtp unreachable")
        return "sent"

    ids = [await rig.submit("mail.smtp", {"n": i}) for i in range(6)]

    async def breaker_open() -> bool:
        return rig.worker.breakers.get("smtp").state.value == "open"

    await eventually(breaker_open, within=10, every=0.05)
    failing_runs = len(rig.runs)
    smtp["up"] = True
    for job_id in ids:
        await rig.until(job_id, JobStatus.SUCCEEDED, within=30)
    statuses = [await rig.status(i) for i in ids]
    assert statuses == [JobStatus.SUCCEEDED] * 6  # none was dead-lettered while smtp was down
    # Once open, the breaker stopped runs: far fewer failures than 6 jobs x 3 attempts.
    assert failing_runs < 6 * 3


async def test_status_events_reach_the_events_exchange_once_per_change(rig: Rig, vhost):
    # The worker batches events into one write per loop turn; each must arrive whole, once.
    # A run shorter than the running-event delay announces only its outcome.
    @rig.registry.handler("mail.fast")
    async def fast(payload: dict, ctx: JobContext) -> int:
        return int(payload["n"])

    @rig.registry.handler("mail.slow")
    async def slow(payload: dict, ctx: JobContext) -> str:
        await asyncio.sleep(0.4)  # longer than the worker's running_event_delay (0.1 s)
        return "slow"

    async with channel(vhost) as ch:
        queue = await ch.declare_queue(exclusive=True)
        await queue.bind(TOPOLOGY.events_exchange, "mail.#")
        fast_ids = [await rig.submit("mail.fast", {"n": n}) for n in range(40)]
        slow_id = await rig.submit("mail.slow", {})
        for job_id in [*fast_ids, slow_id]:
            await rig.until(job_id, JobStatus.SUCCEEDED)
        seen: list[tuple[str, dict]] = []

        async def all_arrived() -> bool:
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                seen.append((message.routing_key or "", orjson.loads(message.body)))
            return len(seen) >= 42

        await eventually(all_arrived, within=10)
    by_job = {
        job_id: [(k, e["status"]) for k, e in seen if e["id"] == job_id] for job_id in fast_ids
    }
    assert all(events == [("mail.fast.succeeded", "succeeded")] for events in by_job.values())
    assert sorted(e["result"] for k, e in seen if k == "mail.fast.succeeded") == list(range(40))
    assert [k for k, e in seen if e["id"] == slow_id] == [
        "mail.slow.running",
        "mail.slow.succeeded",
    ]
    assert len(seen) == 42


async def test_the_worker_counts_runs_outcomes_and_times_them(rig: Rig):
    def sample(name: str, **labels: str) -> float:
        return rig.metrics.registry.get_sample_value(name, labels) or 0.0

    def snapshot() -> dict[str, float]:
        return {
            "started": sample("taskq_jobs_started_total", group="mail", type="mail.counted"),
            "ok": sample(
                "taskq_jobs_completed_total", group="mail", type="mail.counted", outcome="succeeded"
            ),
            "retried": sample(
                "taskq_jobs_completed_total", group="mail", type="mail.counted", outcome="retried"
            ),
            "timed": sample("taskq_job_duration_seconds_count", group="mail", priority="medium"),
            "waited": sample("taskq_job_queue_wait_seconds_count", group="mail", priority="medium"),
        }

    before = snapshot()

    @rig.registry.handler("mail.counted")
    async def counted(payload, ctx: JobContext) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    job_id = await rig.submit("mail.counted")
    await rig.until(job_id, JobStatus.SUCCEEDED)

    async def counted_ok() -> bool:
        # The store shows success a moment before the worker counts it (then acks).
        return (
            sample(
                "taskq_jobs_completed_total", group="mail", type="mail.counted", outcome="succeeded"
            )
            > before["ok"]
        )

    await eventually(counted_ok, within=5)
    after = snapshot()
    assert {k: after[k] - before[k] for k in before} == {
        "started": 2,
        "ok": 1,
        "retried": 1,
        "timed": 2,
        "waited": 2,
    }
    assert sample("taskq_jobs_in_flight", group="mail") == 0


async def test_a_run_past_its_timeout_is_a_retryable_failure_and_others_run_on(rig: Rig):
    @rig.registry.handler("mail.slow", timeout=0.2)
    async def slow(payload, ctx: JobContext) -> None:
        rig.runs.append(ctx.job_id)
        await asyncio.sleep(30)

    @rig.registry.handler("mail.quick")
    async def quick(payload, ctx: JobContext) -> str:
        return "done"

    slow_id = await rig.submit("mail.slow")
    quick_id = await rig.submit("mail.quick")
    await rig.until(quick_id, JobStatus.SUCCEEDED)
    await rig.until(slow_id, JobStatus.DEAD)
    assert rig.runs == [slow_id] * 3  # every attempt timed out
    job = await rig.store.get_job(slow_id)
    assert job is not None
    assert job.last_error == "TimeoutError: the handler ran past its 0.2s timeout"


async def test_the_worker_consumes_again_after_the_broker_drops_its_connection(
    rig: Rig, management
):
    @rig.registry.handler("mail.send")
    async def send(payload: dict, ctx: JobContext) -> None:
        rig.runs.append(ctx.job_id)

    first_job = await rig.submit("mail.send", {"to": "a@example.com"})
    await rig.until(first_job, JobStatus.SUCCEEDED)
    name = "taskq worker mail"
    first = await wait_for_connection(management, rig.settings.vhost, name)
    await management.close_connection(first, reason="test: cut the link")
    await wait_for_connection(management, rig.settings.vhost, name, besides=first)
    # The new connection's tap routes the consumer the worker starts on it.
    second_job = await rig.submit("mail.send", {"to": "b@example.com"})
    await rig.until(second_job, JobStatus.SUCCEEDED, within=30)
    assert rig.runs == [first_job, second_job]


LANES = compiled(
    """
    groups:
      mail:
        jobs: ["mail.#"]
        prefetch: 8
        concurrency: 1
        priority: {strategy: lanes}
    """
)


async def test_of_the_jobs_in_hand_an_urgent_lanes_start_first(vhost):
    gate, gated, all_ran = asyncio.Event(), asyncio.Event(), asyncio.Event()
    async with started(vhost, LANES) as rig:

        @rig.registry.handler("mail.#")
        async def send(payload: str, ctx: JobContext) -> None:
            rig.runs.append(payload)
            if payload == "gate":
                gated.set()
                await gate.wait()
            if len(rig.runs) == 6:
                all_ran.set()

        async def in_hand() -> bool:  # the worker's own queue: no broker figure is as prompt
            return len(rig.worker._inbox) == 5

        await rig.submit("mail.send", "gate", priority=Priority.LOW)
        await asyncio.wait_for(gated.wait(), 10)
        for n in range(4):
            await rig.submit("mail.send", f"low {n}", priority=Priority.LOW)
        await rig.submit("mail.send", "urgent", priority=Priority.URGENT)
        # Each lane has its own prefetch: all five wait in the worker's hand behind the gate.
        await eventually(in_hand, within=10, every=0.02)
        gate.set()
        await asyncio.wait_for(all_ran.wait(), 10)
    assert rig.runs == ["gate", "urgent", "low 0", "low 1", "low 2", "low 3"]


async def test_a_window_cut_short_by_a_cancel_not_its_own_leaves_the_worker_working(rig: Rig):
    # aiormq fails what waits on a connection it gave up on with CancelledError; the executor
    # ended by it would leave the worker consuming with nobody to run what it takes.
    @rig.registry.handler("mail.send")
    async def send(payload: dict, ctx: JobContext) -> None:
        rig.runs.append(ctx.job_id)

    publisher = rig.worker._deps.publisher
    cut: list[int] = []

    class CutOnce:
        def __getattr__(self, name: str) -> object:
            return getattr(publisher, name)

        async def publish_events(self, events: object) -> None:
            if not cut:
                cut.append(1)
                raise asyncio.CancelledError
            await publisher.publish_events(events)  # type: ignore[arg-type]

    rig.worker._deps.publisher = CutOnce()  # type: ignore[assignment]
    first = await rig.submit("mail.send", {"to": "a@example.com"})
    await rig.until(first, JobStatus.SUCCEEDED)
    second = await rig.submit("mail.send", {"to": "b@example.com"})
    await rig.until(second, JobStatus.SUCCEEDED)
    assert cut
    assert rig.runs == [first, second]


async def test_a_worker_cut_off_while_it_starts_consuming_consumes_every_lane_from_the_next_node(
    vhost, monkeypatch: pytest.MonkeyPatch
):
    # The link to the first node goes silent between two lanes' consumes: aiormq gives it up
    # ((heartbeat + 1) x 3 s), and the worker, instead of failing to start, consumes every lane
    # once its channel reopens on the next node (here the same broker, reached directly).
    proxy = FaultProxy(("127.0.0.1", 5672))
    proxy.start()
    stalled: list[int] = []

    def stall_on_the_second_lane(
        tap: FrameTap, channel: AbstractChannel, tag: str, sink: Sink
    ) -> None:
        # The worker routes a lane's deliveries just before it consumes the lane (the lane's
        # rank bound to the sink).
        if isinstance(sink, functools.partial) and sink.args == (1,) and not stalled:
            stalled.append(1)
            proxy.stall()
            time.sleep(0.2)  # stalled before the lane's consume is written
        route_deliveries(tap, channel, tag, sink)

    monkeypatch.setattr("consumers.worker.route_deliveries", stall_on_the_second_lane)
    try:
        direct = urlsplit(vhost.amqp_url.get_secret_value())
        url = vhost.amqp_url.get_secret_value().replace(f":{direct.port}/", f":{proxy.port}/")
        through = vhost.model_copy(
            update={
                "amqp_url": SecretStr(url),
                "heartbeat": 1,
                "amqp_failover": f"{direct.hostname}:{direct.port}",
            }
        )
        async with started(vhost, LANES, worker_broker=through) as rig:
            assert stalled

            @rig.registry.handler("mail.#")
            async def send(payload: str, ctx: JobContext) -> None:
                rig.runs.append(payload)

            jobs = [await rig.submit("mail.send", p.value, priority=p) for p in Priority]
            for job in jobs:
                await rig.until(job, JobStatus.SUCCEEDED, within=20)
        assert sorted(rig.runs) == sorted(p.value for p in Priority)
    finally:
        await asyncio.to_thread(proxy.stop)
