"""Process-wide logging: one loguru sink that every log goes through, with job and trace ids on each line."""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from contextvars import ContextVar, Token
from datetime import UTC
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TextIO

import orjson
from loguru import logger
from opentelemetry import trace

from telemetry.redaction import redact_fields, redact_text

if TYPE_CHECKING:
    from loguru import Message, Record

# The fields that tie a line to a job and its trace, in the order they are written.
JOB_FIELDS = ("job_id", "job_type", "group", "attempt", "correlation_id", "trace_id", "span_id")
LOGGER_FIELD = "logger"  # bound by the stdlib intercept: the stdlib logger's own name
EXCEPTION_FIELD = "exception"  # set by the patcher: the traceback as text, redacted
_NOT_EXTRAS = {*JOB_FIELDS, LOGGER_FIELD, EXCEPTION_FIELD}


def _text(value: Any) -> str:
    # Whatever orjson cannot write goes out as its str(), which may hold a secret too.
    return redact_text(str(value))


def json_line(record: Record) -> str:
    """Return ``record`` as one flat JSON object on one line: base fields, job and trace ids, extras."""
    extra = record["extra"]
    fields: dict[str, Any] = {
        "ts": record["time"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": extra.get(LOGGER_FIELD) or record["name"] or "",
        "function": record["function"],
        "line": record["line"],
        "process": record["process"].id,
    }
    fields |= {key: extra[key] for key in JOB_FIELDS if extra.get(key) is not None}
    fields |= {str(k): v for k, v in extra.items() if k not in fields and k not in _NOT_EXTRAS}
    if extra.get(EXCEPTION_FIELD):
        fields["exception"] = extra[EXCEPTION_FIELD]
    try:
        return orjson.dumps(fields, default=_text, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an int beyond 64 bits, say: a log line must never fail to be written
        safe = {key: value if _plain(value) else _text(value) for key, value in fields.items()}
        return orjson.dumps(safe).decode()


def _plain(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**64
    return isinstance(value, str | bool | float | None)


def text_format(record: Record) -> str:
    """Return loguru's default-like colored format for ``record``, with its job id when it has one."""
    extra = record["extra"]
    where = (
        "<cyan>{extra[logger]}</cyan>"
        if extra.get(LOGGER_FIELD)
        else "<cyan>{name}</cyan>:<cyan>{function}</cyan>:<cyan>{line}</cyan>"
    )
    job = " <magenta>[job {extra[job_id]}]</magenta>" if extra.get("job_id") is not None else ""
    tail = "{extra[exception]}" if extra.get(EXCEPTION_FIELD) else ""
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
        f"{where} - <level>{{message}}</level>{job}\n{tail}"
    )


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
    """Send every log of this process to one sink (``auto``: text on a terminal, else JSON); return the format."""
    out = sys.stderr if stream is None else stream
    try:
        terminal = out.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        terminal = False
    chosen: LogFormat = ("text" if terminal else "json") if shape == "auto" else shape
    logger.remove()
    logger.configure(patcher=_enrich)
    # No diagnose: loguru would print local variables in tracebacks, payloads and secrets included.
    if chosen == "json":

        def write(message: Message) -> None:
            # Flushed per line so a supervisor's and its children's lines never interleave mid-line.
            out.write(json_line(message.record) + "\n")
            out.flush()

        # A format function, unlike a string, skips loguru's own traceback (the line holds one).
        logger.add(
            write, level=level, format=lambda _: "{message}", backtrace=False, diagnose=False
        )
    else:
        logger.add(out, level=level, format=text_format, backtrace=False, diagnose=False)
    _route_stdlib(logger.level(level).no)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return chosen


_JOB_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("taskq_job_log_fields", default=None)


def bind_job(**fields: str | int | None) -> Token[dict[str, Any] | None]:
    """Bind ``JOB_FIELDS`` to every line logged from here on in this context and the tasks it starts."""
    # One context variable set, read by the patcher: cheap enough to call per job and never undo.
    return _JOB_FIELDS.set({k: v for k, v in fields.items() if v is not None})


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
