"""How a log record is written: one flat JSON object per line, or a colored line for a terminal."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from telemetry.redaction import redact_text

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


def json_fields(record: Record) -> dict[str, Any]:
    """Return the flat fields of ``record``: base fields, job and trace ids, extras, exception."""
    extra = record["extra"]
    fields: dict[str, Any] = {
        "ts": record["time"]
        .astimezone(UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z"),
        "level": record["level"].name,
        "message": record["message"],
        "logger": extra.get(LOGGER_FIELD) or record["name"] or "",
        "function": record["function"],
        "line": record["line"],
        "process": record["process"].id,
    }
    for key in JOB_FIELDS:
        if extra.get(key) is not None:
            fields[key] = extra[key]
    for key, value in extra.items():
        if key not in fields and key not in _NOT_EXTRAS:
            fields[str(key)] = value
    if extra.get(EXCEPTION_FIELD):
        fields["exception"] = extra[EXCEPTION_FIELD]
    return fields


def json_line(record: Record) -> str:
    """Return ``record`` as one JSON object on one line (no trailing newline)."""
    fields = json_fields(record)
    try:
        return orjson.dumps(fields, default=_text, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an int beyond 64 bits, say: a log line must never fail to be written
        safe = {key: value if _plain(value) else _text(value) for key, value in fields.items()}
        return orjson.dumps(safe).decode()


def _plain(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**63) <= value < 2**64
    return isinstance(value, str | bool | float | None)


def message_only(record: Record) -> str:
    """Return a format that skips loguru's own traceback rendering (the JSON sink writes its own)."""
    return "{message}"


class JsonLines:
    """A loguru sink writing each record to ``stream`` as one JSON line, flushed at once."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, message: Message) -> None:
        """Write the message's record as one JSON line."""
        # Flushed per line so a supervisor's and its children's lines never interleave mid-line.
        self._stream.write(json_line(message.record) + "\n")
        self._stream.flush()


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
