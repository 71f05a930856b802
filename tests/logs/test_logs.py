import asyncio
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consumers.handlers import JobContext
from telemetry.logs import bind_job, configure_logging
from tests.logs.conftest import Lines, Terminal
from topology.errors import SettingsError
from topology.settings import load_settings

JOB = {
    "job_id": "01JOB",
    "job_type": "email.welcome",
    "group": "email",
    "attempt": 2,
    "correlation_id": "corr-1",
}


@contextmanager
def job_log_context(**fields: Any) -> Iterator[None]:
    """Bind the job's fields to every line logged in the block, as a worker's run does."""
    token = bind_job(**fields)
    try:
        yield
    finally:
        token.var.reset(token)


def test_each_line_is_one_flat_json_object_with_the_base_fields(json_lines: Lines):
    logger.info("worker for group {} consuming {}", "email", "q1,\nq2")
    [line] = json_lines()
    assert line["message"] == "worker for group email consuming q1,\nq2"
    assert line["level"] == "INFO"
    assert line["logger"] == __name__
    assert line["function"] == "test_each_line_is_one_flat_json_object_with_the_base_fields"
    assert isinstance(line["line"], int)
    assert line["process"] == os.getpid()
    assert line["ts"].endswith("Z")
    stamp = datetime.fromisoformat(line["ts"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert all(not isinstance(value, dict | list) for value in line.values())  # flat


def test_job_fields_are_on_every_line_inside_the_context_and_gone_after(json_lines: Lines):
    with job_log_context(**JOB):
        logger.info("running")
        logging.getLogger("aio_pika").warning("channel closed")
    logger.info("idle")
    running, library, idle = json_lines()
    for line in (running, library):
        assert {k: line[k] for k in JOB} == JOB
    assert not set(JOB) & set(idle)


def test_fields_not_known_are_left_out_rather_than_null(json_lines: Lines):
    with job_log_context(job_id="01JOB", attempt=None, correlation_id=None):
        logger.info("running")
    [line] = json_lines()
    assert line["job_id"] == "01JOB"
    assert not {"attempt", "correlation_id", "job_type"} & set(line)


async def test_the_context_follows_the_job_into_its_tasks_and_threads(json_lines: Lines):
    async def child() -> None:
        logger.info("in a task")

    with job_log_context(job_id="01JOB"):
        await asyncio.create_task(child())
        await asyncio.to_thread(logger.info, "in a thread")
    assert [line.get("job_id") for line in json_lines()] == ["01JOB", "01JOB"]


async def test_concurrent_jobs_keep_their_own_fields(json_lines: Lines):
    async def job(job_id: str) -> None:
        with job_log_context(job_id=job_id):
            await asyncio.sleep(0.01)
            logger.info("done {}", job_id)

    await asyncio.gather(*(job(f"j{i}") for i in range(5)))
    lines = json_lines()
    assert len(lines) == 5
    assert all(line["message"] == f"done {line['job_id']}" for line in lines)


def test_the_handlers_context_logger_writes_the_same_field_names(json_lines: Lines):
    ctx = JobContext(
        job_id="01JOB",
        job_type="email.welcome",
        attempt=2,
        max_attempts=5,
        deadline=datetime.now(UTC),
        idempotency_key="k",
        correlation_id="corr-1",
    )
    ctx.logger.info("from a handler")
    [line] = json_lines()
    assert {k: line[k] for k in ("job_id", "job_type", "attempt", "correlation_id")} == {
        "job_id": "01JOB",
        "job_type": "email.welcome",
        "attempt": 2,
        "correlation_id": "corr-1",
    }


def test_trace_and_span_ids_of_the_current_span_are_on_each_line(json_lines: Lines):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    logger.info("before")
    with tracer.start_as_current_span("job"), job_log_context(job_id="01JOB"):
        logger.info("inside")
        logging.getLogger("aiormq").info("from a library")
    [span] = exporter.get_finished_spans()
    before, inside, library = json_lines()
    assert not {"trace_id", "span_id"} & set(before)
    for line in (inside, library):
        assert line["trace_id"] == format(span.context.trace_id, "032x")
        assert line["span_id"] == format(span.context.span_id, "016x")
        assert line["job_id"] == "01JOB"


def test_stdlib_and_uvicorn_loggers_land_in_the_one_sink():
    # uvicorn with a log config installs its own handlers: they must not write beside the sink.
    stray = io.StringIO()
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(stray))
    configure_logging(shape="json", stream=(stream := io.StringIO()))
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.access").info('%s - "%s %s"', "127.0.0.1", "GET", "/readyz")
    logging.getLogger("some.library").error("went wrong")
    logging.getLogger("asyncio").debug("below the level: dropped")
    assert stray.getvalue() == ""
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["logger"], line["level"], line["message"]) for line in lines] == [
        ("uvicorn.error", "INFO", "Started server process [42]"),
        ("uvicorn.access", "INFO", '127.0.0.1 - "GET /readyz"'),
        ("some.library", "ERROR", "went wrong"),
    ]
    assert lines[0]["function"] == "test_stdlib_and_uvicorn_loggers_land_in_the_one_sink"


def test_warnings_go_through_the_sink(json_lines: Lines):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library is unhappy", UserWarning, stacklevel=1)
    [line] = json_lines()
    assert line["logger"] == "py.warnings"
    assert "a library is unhappy" in line["message"]


def test_an_exception_is_a_string_field_without_local_variables(json_lines: Lines):
    password = "hunter2"  # a local a diagnosing traceback would print
    try:
        raise RuntimeError(f"cannot reach amqp://taskq:{password}@rabbit/")
    except RuntimeError:
        logger.exception("publish failed")
    [line] = json_lines()
    assert line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: cannot reach amqp://taskq:***@rabbit/" in line["exception"]
    assert "hunter2" not in str(line)


def test_an_uncaught_exception_is_logged_as_a_json_line(json_lines: Lines):
    try:
        raise KeyError("boom")
    except KeyError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    thread = threading.Thread(target=lambda: 1 / 0, name="doomed")
    thread.start()
    thread.join()
    main, other = json_lines()
    assert main["level"] == "CRITICAL"
    assert "KeyError: 'boom'" in main["exception"]
    assert other["message"] == "uncaught exception in thread doomed"
    assert "ZeroDivisionError" in other["exception"]


def test_json_by_default_off_a_terminal_text_on_one():
    assert configure_logging(stream=io.StringIO()) == "json"
    terminal = Terminal()
    assert configure_logging(stream=terminal) == "text"
    with job_log_context(job_id="01JOB"):
        logger.info("human readable")
    logging.getLogger("uvicorn.error").warning("from uvicorn")
    first, second = terminal.getvalue().splitlines()
    assert all(part in first for part in ("INFO", "human readable", "[job 01JOB]"))
    assert not first.startswith("{")
    assert all(part in second for part in ("WARNING", "uvicorn.error", "from uvicorn"))


@pytest.mark.parametrize(
    ("environ", "fmt", "terminal", "chosen"),
    [
        ({"TASKQ_LOG_FORMAT": "text"}, None, False, "text"),
        ({"TASKQ_LOG_FORMAT": "JSON"}, None, True, "json"),
        ({"TASKQ_LOG_FORMAT": "auto"}, None, True, "text"),
        ({"TASKQ_LOG_FORMAT": "text"}, "json", True, "json"),  # an override wins
    ],
)
def test_the_format_can_be_asked_for(environ, fmt, terminal, chosen):
    stream = Terminal() if terminal else io.StringIO()
    settings = load_settings(environ).log
    assert (
        configure_logging(settings.log_level, fmt or settings.log_format, stream=stream) == chosen
    )


def test_the_level_comes_from_the_environment():
    stream = io.StringIO()
    configure_logging(
        load_settings({"TASKQ_LOG_LEVEL": "warning"}).log.log_level, "json", stream=stream
    )
    logger.info("dropped")
    logging.getLogger("aio_pika").info("dropped too")
    logger.warning("kept")
    assert stream.getvalue().count("\n") == 1
    assert '"message":"kept"' in stream.getvalue()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"TASKQ_LOG_FORMAT": "xml"}, "TASKQ_LOG_FORMAT"),
        ({"TASKQ_LOG_LEVEL": "loud"}, "TASKQ_LOG_LEVEL"),
    ],
)
def test_bad_settings_are_named(environ, named):
    with pytest.raises(SettingsError, match=named):
        load_settings(environ)


def test_values_orjson_cannot_write_still_make_a_line(json_lines: Lines):
    logger.bind(huge=2**70, thing=object(), url="amqp://u:p@h/").info("odd extras")
    [line] = json_lines()
    assert line["huge"] == str(2**70)
    assert line["thing"].startswith("<object object")
    assert line["url"] == "amqp://u:***@h/"
