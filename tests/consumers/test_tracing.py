"""One trace per job on the real broker: HTTP request, publish, every attempt, the DLQ; replays link."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from consumers.dlq import DeadFilter, replay
from consumers.handlers import JobContext, Permanent, Retry
from jobstore.model import JobStatus
from producers.api.app import Services, create_app
from telemetry import tracing
from tests.consumers.rig import TOPOLOGY, Rig
from tests.credentials import bearer, issue_key
from topology.broker import connect

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


def of_job(spans: tuple[ReadableSpan, ...], job_id: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("taskq.job_id") == job_id]


def test_tracing_is_off_by_default_and_the_aio_pika_instrumentation_turns_on_with_it():
    assert not tracing.enabled()
    assert not tracing.wanted({})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
    headers: dict[str, object] = {}
    tracing.inject(headers)
    assert headers == {}  # off: nothing added to messages
    provider = TracerProvider()
    tracing.enable(provider)
    try:
        assert AioPikaInstrumentor().is_instrumented_by_opentelemetry
    finally:
        tracing.disable()
    assert not AioPikaInstrumentor().is_instrumented_by_opentelemetry


async def test_one_trace_from_the_http_request_through_every_retry_to_success(
    rig: Rig, spans: InMemorySpanExporter
):
    @rig.registry.handler("mail.traced")
    async def traced(payload, ctx: JobContext) -> str:
        if ctx.attempt < 3:
            raise Retry("not yet", delay=0.1)
        return "done"

    app = create_app(Services(rig.submitter))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://taskq.test",
        headers=bearer(await issue_key(rig.submitter.store)),
    ) as client:
        answer = await client.post(
            "/jobs",
            json={"type": "mail.traced"},
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    await rig.until(job_id, JobStatus.SUCCEEDED)
    finished = spans.get_finished_spans()
    server = [s for s in finished if s.kind is SpanKind.SERVER and s.name == "POST /jobs"]
    runs = [s for s in of_job(finished, job_id) if s.kind is SpanKind.CONSUMER]
    publishes = [s for s in of_job(finished, job_id) if s.kind is SpanKind.PRODUCER]
    assert len(server) == 1
    assert [s.attributes["taskq.attempt"] for s in runs] == [1, 2, 3]  # type: ignore[index]
    assert {s.name for s in publishes} >= {"taskq.jobs publish", "taskq.retry publish"}
    trace_ids = {s.context.trace_id for s in [*server, *runs, *publishes]}  # type: ignore[union-attr]
    # The caller's trace: the request continued it, and every hop after stayed in it.
    assert trace_ids == {0x0AF7651916CD43DD8448EB211C80319C}


async def test_the_dead_letter_is_in_the_jobs_trace_and_a_replay_starts_a_linked_one(
    rig: Rig, spans: InMemorySpanExporter
):
    fail = {"now": True}

    @rig.registry.handler("mail.doomed")
    async def doomed(payload, ctx: JobContext) -> str:
        if fail["now"]:
            raise Permanent("broken until fixed")
        return "fixed"

    job_id = await rig.submit("mail.doomed")
    await rig.until(job_id, JobStatus.DEAD)
    first = of_job(spans.get_finished_spans(), job_id)
    dead_trace = {s.context.trace_id for s in first}  # type: ignore[union-attr]
    assert len(dead_trace) == 1
    assert "taskq.dlx publish" in {s.name for s in first}
    fail["now"] = False
    spans.clear()
    async with await connect(rig.settings, name="replay") as connection:
        outcome = await replay(
            connection, TOPOLOGY, TOPOLOGY.group("mail"), rig.publisher, rig.store, DeadFilter()
        )
    assert outcome.matched == 1
    await rig.until(job_id, JobStatus.SUCCEEDED)
    finished = spans.get_finished_spans()
    (replayed,) = [s for s in finished if s.name == "mail.doomed replay"]
    assert replayed.context.trace_id not in dead_trace  # type: ignore[union-attr]
    assert [link.context.trace_id for link in replayed.links] == list(dead_trace)
    run = [s for s in of_job(finished, job_id) if s.kind is SpanKind.CONSUMER]
    assert {s.context.trace_id for s in run} == {replayed.context.trace_id}  # type: ignore[union-attr]


async def test_every_job_log_line_is_json_with_the_job_id_and_the_trace_id(
    rig: Rig, spans: InMemorySpanExporter
):
    import io
    import json

    from loguru import logger

    from telemetry.logs import configure_logging

    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    try:

        @rig.registry.handler("mail.logged")
        async def logged(payload, ctx: JobContext) -> str:
            ctx.logger.info("handler working")
            if ctx.attempt == 1:
                raise RuntimeError("first attempt fails")
            return "ok"

        app = create_app(Services(rig.submitter))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://taskq.test",
            headers=bearer(await issue_key(rig.submitter.store)),
        ) as client:
            job_id = (await client.post("/jobs", json={"type": "mail.logged"})).json()["id"]
        await rig.until(job_id, JobStatus.SUCCEEDED)
        await logger.complete()
    finally:
        configure_logging("INFO", "text")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # each one is JSON
    job_lines = [line for line in lines if line.get("job_id") == job_id]
    trace_ids = {s.context.trace_id for s in of_job(spans.get_finished_spans(), job_id)}  # type: ignore[union-attr]
    assert {line["message"] for line in job_lines} >= {
        "handler working",
        "job succeeded",
    }, job_lines
    assert any(line["message"].startswith("job retried") for line in job_lines)
    assert all(
        line["trace_id"] == format(next(iter(trace_ids)), "032x") and line["span_id"]
        for line in job_lines
    ), job_lines
    assert len(trace_ids) == 1
    assert all(line["job_type"] == "mail.logged" and line["group"] == "mail" for line in job_lines)
