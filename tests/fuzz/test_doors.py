"""Every door agrees on every limit: what one accepts the worker can run, what it refuses is a 4xx naming the field.

Hypothesis draws values near and across each limit (job types, AMQP short strings in bytes,
delays, times, payloads) and pushes each through the API model, the submitter (the one path
of the API, the clients, the webhooks and callbacks), the topology and webhook validators,
the AMQP frame encoder and the worker's envelope decoder.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import assume, example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from producers import wire
from producers.requests import JobSubmission
from producers.submit import JobRequest, Submitter
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.fakes.store import InMemoryJobStore
from topology import limits
from topology.compiled import compile_topology
from topology.envelope import Envelope, decode
from topology.errors import JobRejectedError, TaskqError
from topology.loader import parse_topology
from topology.settings import SubmitSettings
from topology.spec import WebhookSourceSpec

TOPOLOGY = compile_topology(parse_topology("groups:\n  all: {jobs: ['job.#']}\n"))
# Text near the edges: multi-byte letters, controls, NUL, bidi marks, lone surrogates.
EDGY = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(["\x00", "\x01", "\x7f", "\x85", "\u202e", "\u2066", "\ud800", "é", "😀"]),
        st.sampled_from(list("abc.*#-_ ")),
    ),
    max_size=300,
)
WORDS = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
JOB_TYPES = st.lists(WORDS, min_size=1, max_size=15).map(".".join)


def _submit(**fields: Any) -> Envelope | JobRejectedError:
    """Submit through the submitter with in-memory ports: the envelope the worker gets, or the refusal."""
    publisher = InMemoryPublisher(TOPOLOGY)
    submitter = Submitter(TOPOLOGY, publisher, InMemoryJobStore(), InMemoryBlobStore())
    try:
        asyncio.run(submitter.submit(JobRequest(**fields)))
    except JobRejectedError as exc:
        return exc
    [published] = publisher.published
    return published.envelope


def _api(**fields: Any) -> set[str]:
    """Return the fields the API model refuses in ``fields`` (none when it accepts them)."""
    try:
        JobSubmission.model_validate(fields)
    except ValidationError as exc:
        return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}
    return set()


def _worker_runs(envelope: Any) -> None:
    """The message the API made goes onto the wire and back through the worker's decoder."""
    props = envelope.properties()
    wire.encode_properties(
        content_type=props.content_type,
        delivery_mode=props.delivery_mode,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        type=props.type,
        headers=wire.encode_table(props.headers),
    )
    assert decode(envelope.encode()) == envelope


@given(JOB_TYPES | EDGY)
@example("é" * 200)  # under 255 characters, over 255 bytes
@example("a.*")
@example("a..b")
@example("a\u202eb")
def test_job_types_one_grammar_at_every_door(drawn: str) -> None:
    job_type = f"job.{drawn}"  # the topology's one group takes job.#
    valid = limits.job_type_problem(job_type, allow_wildcards=False) is None
    assert _api(type=job_type) in (set(), {"type"})  # the rest is the submitter's
    mapped = WebhookSourceSpec(scheme="github", secret_env="S", job="gh.{event}").job_type(job_type)
    assert (mapped is not None) == (
        limits.job_type_problem(f"gh.{job_type}", allow_wildcards=False) is None
    )
    try:
        topology = parse_topology(f"groups:\n  g: {{jobs: [{_yaml(job_type)}]}}\n")
        declared = True
    except TaskqError:
        declared = False
    outcome = _submit(type=job_type)
    if valid:
        assert declared, job_type
        assert topology.groups["g"].jobs == (job_type,)
        _worker_runs(outcome)
    else:
        assert isinstance(outcome, JobRejectedError)
        assert outcome.field == "type"


def _yaml(text: str) -> str:
    import json

    return json.dumps(text)  # JSON strings are YAML flow scalars


@given(EDGY, st.sampled_from(["correlation_id", "idempotency_key"]))
@example("é" * 200, "correlation_id")  # 200 characters, 400 bytes
@example("a\x00b", "correlation_id")
def test_short_strings_counted_in_bytes_at_every_door(value: str, field: str) -> None:
    refused = _api(type="job.x", **{field: value})
    assert refused in (set(), {field})
    outcome = _submit(type="job.x", **{field: value})
    if isinstance(outcome, JobRejectedError):
        assert outcome.field == field
        return
    _worker_runs(outcome)  # whatever the submitter takes (webhooks, callbacks), the worker runs
    assert len(value.encode()) <= limits.MAX_SHORT_STRING_BYTES


@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**80), max_value=2**80).map(float),
    )
)
@example(1e15)
@example(float(2**70))
@example(math.inf)
def test_delays_never_overflow(delay: float) -> None:
    refused = _api(type="job.x", delay=delay)
    assert refused in (set(), {"delay"})
    outcome = _submit(type="job.x", delay=delay)
    if isinstance(outcome, JobRejectedError):
        assert outcome.field == "delay"
        assert refused or delay > SubmitSettings().max_delay  # TASKQ_MAX_DELAY, below the bound
        return
    assert not refused
    _worker_runs(outcome)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.none()
    ),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
@example(datetime(9999, 12, 31, 23, 59, 59), -14 * 60)
@example(datetime(1, 1, 1, 0, 0), 14 * 60)
def test_run_at_never_overflows(moment: datetime, offset_minutes: int) -> None:
    run_at = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    refused = _api(type="job.x", run_at=run_at)
    assert refused in (set(), {"run_at"})
    outcome = _submit(type="job.x", run_at=run_at)
    if isinstance(outcome, JobRejectedError):
        assert outcome.field == "run_at"
        return
    assert not refused
    _worker_runs(outcome)
    assert outcome.not_before is None or outcome.not_before.tzinfo == UTC


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | EDGY,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(EDGY, kids, max_size=3),
        max_leaves=8,
    )
)
def test_payloads_the_store_cannot_hold_are_refused(payload: Any) -> None:
    assume(_encodable(payload))
    outcome = _submit(type="job.x", payload=payload)
    if isinstance(outcome, JobRejectedError):
        assert outcome.field == "payload"
        assert "\\u0000" in _json(payload)
        return
    _worker_runs(outcome)


def _encodable(payload: Any) -> bool:
    try:
        _json(payload)
    except TypeError:
        return False  # a lone surrogate or an integer JSON cannot carry: never reaches a door
    return True


def _json(payload: Any) -> str:
    import orjson

    return orjson.dumps(payload).decode()
