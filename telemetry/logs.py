"""Process-wide logging: one loguru sink, JSON lines by default, that every log goes through.

Each process's entry point calls ``configure_logging()`` once; ``job_log_context()`` binds a
job's fields to every line logged while it runs, and the current OpenTelemetry span's ids
are added to every line by the patcher.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TextIO

from loguru import logger
from opentelemetry import trace

from telemetry.log_lines import EXCEPTION_FIELD, LOGGER_FIELD, JsonLines, message_only, text_format
from telemetry.redaction import redact_fields, redact_text

if TYPE_CHECKING:
    from loguru import Record

LogFormat = Literal["json", "text"]
# Libraries that log through the standard library; their own handlers would bypass the sink.
STDLIB_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "fastapi",
    "aio_pika",
    "aiormq",
    "asyncio",
    "boto3",
    "botocore",
    "py.warnings",
)


def configure_logging(
    level: str = "INFO",
    shape: LogFormat | Literal["auto"] = "auto",
    *,
    stream: TextIO | None = None,
) -> LogFormat:
    """Send every log of this process (loguru's, the standard library's, uncaught errors) to one sink.

    The format is ``shape``; ``auto`` (the default) means text when ``stream`` (default
    stderr) is a terminal, else JSON lines. Returns the format chosen.
    """
    out = sys.stderr if stream is None else stream
    chosen: LogFormat = ("text" if _is_terminal(out) else "json") if shape == "auto" else shape
    logger.remove()
    logger.configure(patcher=_enrich)
    # No diagnose: loguru would print local variables in tracebacks, payloads and secrets included.
    if chosen == "json":
        logger.add(
            JsonLines(out),
            level=level,
            format=message_only,
            backtrace=False,
            diagnose=False,
        )
    else:
        logger.add(out, level=level, format=text_format, backtrace=False, diagnose=False)
    _route_stdlib(logger.level(level).no)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return chosen


_JOB_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("taskq_job_log_fields", default=None)


def bind_job(
    *,
    job_id: str,
    job_type: str | None = None,
    group: str | None = None,
    attempt: int | None = None,
    correlation_id: str | None = None,
) -> Token[dict[str, Any] | None]:
    """Bind the job's fields to every line logged from here on in this context, and in tasks and threads it starts.

    One context variable set, read by the patcher ``configure_logging`` installs: cheap enough
    for a task that runs one job to call and never undo.
    """
    fields: dict[str, Any] = {"job_id": job_id}
    if job_type is not None:
        fields["job_type"] = job_type
    if group is not None:
        fields["group"] = group
    if attempt is not None:
        fields["attempt"] = attempt
    if correlation_id is not None:
        fields["correlation_id"] = correlation_id
    return _JOB_FIELDS.set(fields)


@contextmanager
def job_log_context(
    *,
    job_id: str,
    job_type: str | None = None,
    group: str | None = None,
    attempt: int | None = None,
    correlation_id: str | None = None,
) -> Iterator[None]:
    """Bind the job's fields to every line logged in the block, and in tasks and threads it starts."""
    token = bind_job(
        job_id=job_id,
        job_type=job_type,
        group=group,
        attempt=attempt,
        correlation_id=correlation_id,
    )
    try:
        yield
    finally:
        _JOB_FIELDS.reset(token)


class InterceptHandler(logging.Handler):
    """A standard-library handler that passes each record on to loguru (loguru's README recipe)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` through loguru at its level, attributed to the code that logged it."""
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format in a library: log what there is, not an error
            message = str(record.msg)
        frame, depth = sys._getframe(1), 1
        # Skip the logging module's frames so function and line are the library's own.
        while frame.f_back is not None and frame.f_code.co_filename == logging.__file__:
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).bind(**{LOGGER_FIELD: record.name}).log(
            level, message
        )


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _route_stdlib(level: int) -> None:
    root = logging.getLogger()
    # Replaced, not closed: handlers someone else installed (pytest's) stay usable for them.
    root.handlers = [InterceptHandler()]
    root.setLevel(level)
    for name in STDLIB_LOGGERS:
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
        named.setLevel(logging.NOTSET)  # the root's level rules, whatever was set before
    logging.captureWarnings(True)


def _enrich(record: Record) -> None:
    """Add the job's fields, the current span's trace and span ids and the traceback, then mask secrets."""
    extra = record["extra"]
    for name, value in (_JOB_FIELDS.get() or {}).items():
        extra.setdefault(name, value)  # a field bound on the logger wins
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        extra.setdefault("trace_id", trace.format_trace_id(span.trace_id))
        extra.setdefault("span_id", trace.format_span_id(span.span_id))
    caught = record["exception"]
    if caught is not None and caught.value is not None:
        extra[EXCEPTION_FIELD] = "".join(
            traceback.format_exception(caught.type, caught.value, caught.traceback)
        )
    record["message"] = redact_text(record["message"])
    extra.update(redact_fields(extra))


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):  # Ctrl-C keeps Python's short message
        sys.__excepthook__(kind, value, tb)
        return
    logger.opt(exception=(kind, value, tb)).critical("uncaught exception: {}", kind.__name__)


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "?"
    logger.opt(exception=(args.exc_type, args.exc_value, args.exc_traceback)).error(
        "uncaught exception in thread {}", name
    )
