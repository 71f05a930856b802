"""Every limit and grammar a value must meet to cross a door, defined once so every door agrees."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from pydantic import AfterValidator, Field

V = TypeVar("V")

# AMQP short strings (message id, type, correlation id, routing keys, header values).
MAX_SHORT_STRING_BYTES = 255
MAX_URL_CHARS = 2048  # callback and blob URLs (ASCII only, so also bytes)
MAX_ATTEMPTS = 1000
# The hard bound of delay and run_at; TASKQ_MAX_DELAY may only lower it. Far below where
# datetime arithmetic overflows (year 9999), and above any retry or schedule worth queuing.
MAX_DELAY_S = 10 * 366 * 86400.0
MAX_TENANT_CHARS = 64
EXCERPT_CHARS = 40  # how much of a client's value an error message or log line may quote

# What the HTTP server reads before the app sees a request (uvicorn's protocol layer).
# A URL, or one header field (414, 431 beyond): under the 8 KiB line the WebSocket
# handshake parser reads, so an upgrade is refused here rather than left hanging there.
MAX_REQUEST_LINE_BYTES = 8000
MAX_HEADERS = 100  # header fields of one request (431 beyond)
MAX_HEAD_BYTES = 64 * 1024  # the request line and every header together (431 beyond)
HEAD_TIMEOUT_S = 10.0  # from the first byte of a request to the end of its head (408)
BODY_IDLE_TIMEOUT_S = 15.0  # longest pause while a body is being sent (408)

JOB_WORD = r"[A-Za-z0-9_-]+"
JOB_TYPE_PATTERN = rf"^{JOB_WORD}(?:\.{JOB_WORD})*$"
_JOB_WORD_RE = re.compile(JOB_WORD)
TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"  # printable ASCII, no spaces: safe in a header
CALLBACK_URL_PATTERN = r"^https?://[\x21-\x7e]+$"
# C0 and C1 controls (NUL included), DEL, and the bidirectional overrides and isolates that
# make text display other than it reads: no store, log line or console should hold them.
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def excerpt(value: object) -> str:
    """Return a short, escaped quotation of a client's value: safe in error bodies and logs."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= EXCERPT_CHARS:
        return ascii(text)
    return f"{text[:EXCERPT_CHARS]!a}... ({len(text)} characters)"


def job_type_problem(job_type: str, *, allow_wildcards: bool) -> str | None:
    """Return why ``job_type`` is not a valid job type (or pattern), or ``None`` if it is."""
    if len(job_type.encode("utf-8", "surrogatepass")) > MAX_SHORT_STRING_BYTES:
        return (
            f"{excerpt(job_type)} is longer than RabbitMQ's {MAX_SHORT_STRING_BYTES}-byte "
            "routing key"
        )
    for word in job_type.split("."):
        if allow_wildcards and word in ("*", "#"):
            continue
        if not _JOB_WORD_RE.fullmatch(word):
            allowed = "letters, digits, '_' and '-'"
            wild = ", or a whole word '*' or '#'" if allow_wildcards else ""
            return (
                f"{excerpt(job_type)} has the word {excerpt(word)}; each dot-separated word "
                f"must be {allowed}{wild}"
            )
    return None


def tenant_problem(tenant: str) -> str | None:
    """Return why ``tenant`` is not a valid tenant name, or ``None`` if it is."""
    if TENANT_RE.fullmatch(tenant):
        return None
    return (
        f"tenant {excerpt(tenant)} must be 1-{MAX_TENANT_CHARS} letters, digits, '.', '_' "
        "or '-', starting with a letter or digit"
    )


def text_problem(value: str) -> str | None:
    """Return why ``value`` cannot be stored and sent as text (NUL, controls, bidi, lone surrogates), or ``None``."""
    found = _UNSAFE_TEXT.search(value)
    if found:
        return f"holds the control character {found.group()!a}"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "holds a lone surrogate (not valid UTF-8)"
    return None


def short_string_problem(value: str) -> str | None:
    """Return why ``value`` cannot be an AMQP short string taskq sends, or ``None`` if it can."""
    problem = text_problem(value)
    if problem:
        return problem
    size = len(value.encode())
    if not 1 <= size <= MAX_SHORT_STRING_BYTES:
        return (
            f"must be 1-{MAX_SHORT_STRING_BYTES} bytes in UTF-8 (an AMQP short string), not {size}"
        )
    return None


def payload_problem(encoded: bytes) -> str | None:
    """Return why a JSON payload (as orjson encoded it) cannot be stored, or ``None``."""
    if b"\\u0000" in encoded:
        return "payload strings may not contain NUL (\\u0000)"
    return None


def utc_time(value: datetime) -> datetime:
    """Return ``value`` in UTC; raise ValueError without an offset or beyond UTC's range."""
    if value.tzinfo is None:
        raise ValueError("needs a time zone offset (RFC 3339), e.g. 2026-01-01T09:00:00Z")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def checked(problem_of: Callable[[V], str | None]) -> AfterValidator:
    """Return a validator that refuses a value ``problem_of`` finds a problem with."""

    def check(value: V) -> V:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


JobType = Annotated[
    str, Field(min_length=1, max_length=MAX_SHORT_STRING_BYTES, pattern=JOB_TYPE_PATTERN)
]
"""A job type: dot-separated words of ASCII letters, digits, ``_`` and ``-`` (a routing key)."""
ShortString = Annotated[
    str, Field(min_length=1, max_length=MAX_SHORT_STRING_BYTES), checked(short_string_problem)
]
"""An AMQP short string taskq sends: 1-255 bytes of UTF-8 without control characters."""
IdempotencyKey = Annotated[
    str, Field(min_length=1, max_length=MAX_SHORT_STRING_BYTES, pattern=IDEMPOTENCY_KEY_PATTERN)
]
CallbackUrl = Annotated[str, Field(max_length=MAX_URL_CHARS, pattern=CALLBACK_URL_PATTERN)]
Delay = Annotated[float, Field(ge=0, le=MAX_DELAY_S, strict=True, allow_inf_nan=False)]
UtcTime = Annotated[datetime, AfterValidator(utc_time)]
Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS, strict=True)]
Tenant = Annotated[str, checked(tenant_problem)]
