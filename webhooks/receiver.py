"""``POST /webhooks/{source}``: each source's verifier, a delivery verified on its raw bytes, then enqueued exactly once, and the log of what it did lately."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger

from producers.api import problems
from producers.api.app import Services
from producers.api.metrics import ApiMetrics
from producers.auth.authenticator import RateLimiter, retry_after
from producers.submit import JobRequest, Submitted, Submitter
from topology.compiled import CompiledTopology
from topology.errors import (
    IdempotencyInFlightError,
    MalformedWebhook,
    SignatureRejected,
    TaskqError,
    TimestampRejected,
    WebhookError,
)
from topology.limits import excerpt
from topology.reserved import webhook_producer
from topology.settings import AuthSettings
from topology.spec import HMAC_ONLY, WebhookScheme, WebhookSourceSpec
from webhooks.schemes.base import Delivery, Verifier
from webhooks.schemes.hmac_header import HmacVerifier, StripeVerifier, github_verifier
from webhooks.schemes.standard import StandardVerifier

TWIN_WAIT_S = 5.0  # how long a concurrent duplicate waits for the first copy's confirm
TWIN_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Source:
    """One webhook source: its spec, and its verifier (``None`` while it has no usable secret)."""

    name: str
    spec: WebhookSourceSpec
    verifier: Verifier | None
    problem: str | None = None  # why there is no verifier: what the operator must set

    @property
    def kept_headers(self) -> tuple[str, ...]:
        """Return the names of the headers kept on each job (lower case): its verifier's, and the body's type."""
        return ("content-type", *(self.verifier.kept if self.verifier else ()))


def load_sources(topology: CompiledTopology, environ: Mapping[str, str]) -> dict[str, Source]:
    """Return every source of the topology, with the verifier its secrets make."""
    sources = {}
    for name, spec in topology.webhooks:
        secrets, missing = _secrets(spec, environ)
        verifier: Verifier | None = None
        problem: str | None = f"webhook source {name!r} has no secret: set {missing}"
        if secrets:
            try:
                verifier, problem = build_verifier(spec, secrets), None
            except WebhookError as exc:
                problem = f"webhook source {name!r} has an unusable secret: {exc}"
        if problem is not None:
            logger.warning("{}; its deliveries are answered 503 until then", problem)
        sources[name] = Source(name, spec, verifier, problem)
    return sources


def build_verifier(spec: WebhookSourceSpec, secrets: Sequence[str]) -> Verifier:
    """Return the verifier of ``spec``'s scheme for ``secrets`` (newest first)."""
    tolerance = spec.tolerance // 1000
    keys = [secret.encode() for secret in secrets]
    if spec.scheme is WebhookScheme.GITHUB:
        return github_verifier(keys)
    if spec.scheme is WebhookScheme.STRIPE:
        return StripeVerifier(keys, tolerance=tolerance)
    if spec.scheme is WebhookScheme.STANDARD:
        return StandardVerifier(list(secrets), tolerance=tolerance)
    # The hmac options of the spec are named as HmacVerifier's keyword arguments.
    options = spec.model_dump(include={"algorithm", "encoding", "prefix", *HMAC_ONLY})
    return HmacVerifier(keys, tolerance=tolerance, **options)


def _secrets(spec: WebhookSourceSpec, environ: Mapping[str, str]) -> tuple[list[str], str]:
    """Return the secrets found (environment first, then files) and what to set when none is."""
    found = [environ[name] for name in spec.secret_env if environ.get(name)]
    for path in spec.secret_file:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            logger.warning("webhook secret file {} cannot be read: {}", path, exc)
            continue
        if text:
            found.append(text)
    wanted = [*spec.secret_env, *(f"the file {p}" for p in spec.secret_file)]
    return found, " or ".join(wanted)


def webhook_router(auth: AuthSettings, environ: Mapping[str, str] | None = None) -> APIRouter:
    """Return the router of ``POST /webhooks/{source}``; secrets come from ``environ`` (default: the process's)."""
    router = APIRouter(tags=["webhooks"])
    env = os.environ if environ is None else environ
    limiter = RateLimiter(auth.webhook_rate_limit, auth.webhook_rate_burst)
    sources: dict[str, Source] = {}  # built from the topology and the environment on first use

    @router.post(
        "/webhooks/{source}",
        status_code=202,
        summary="Receive a signed webhook delivery and enqueue it as a job",
    )
    async def receive(source: str, request: Request) -> Response:
        """Verify one delivery of ``source`` and answer 202 with its job once the broker has it."""
        # In this order: the body is bounded before it is buffered (the app's limit), the rate
        # before any signature is computed, the signature before anything is parsed, and the
        # answer is 2xx only once the broker confirmed the job.
        services: Services = request.app.state.services
        metrics: ApiMetrics = request.app.state.metrics
        if not sources:
            sources.update(load_sources(services.submitter.topology, env))
        found = sources.get(source)
        if found is None:
            # A URL segment: never a label value.
            metrics.webhook_deliveries.labels("unknown", "unknown_source").inc()
            known = ", ".join(sorted(sources)) or "none"
            return problems.problem(404, f"no webhook source {excerpt(source)}; sources: {known}")
        wait = limiter.take(source)
        if wait > 0:
            metrics.rate_limited.labels(f"webhook:{source}").inc()
            detail = f"too many deliveries for source {source}; the limit is {limiter.rate:g}/s"
            headers = {"Retry-After": retry_after(wait)}
            response: Response = problems.problem(429, detail, headers=headers)
            result = "rate_limited"
        else:
            response, result = await _receive(found, request, services.submitter)
        metrics.webhook_deliveries.labels(source, result).inc()
        delivery_log(request.app).record(source, DeliveryNote.of(result, response))
        return response

    return router


_RETRY = {"Retry-After": "5"}


async def _receive(source: Source, request: Request, submitter: Submitter) -> tuple[Response, str]:
    """Answer one delivery of a known source; also return the result to count it under."""
    if source.verifier is None:
        detail = source.problem or "source not configured"
        return problems.problem(503, detail, headers=_RETRY), "unavailable"
    body = await request.body()
    headers = dict(request.headers.items())
    if len(headers) != len(request.headers.raw):
        names = [name.decode("latin-1").lower() for name, _ in request.headers.raw]
        repeated = {name for name in names if names.count(name) > 1} & set(source.kept_headers)
        if repeated:
            detail = f"header {sorted(repeated)[0]} is sent more than once"
            return problems.problem(400, detail), "malformed"
    try:
        delivery = source.verifier.verify(body, headers, time.time())
    except SignatureRejected as exc:
        return problems.problem(401, str(exc)), "rejected_signature"
    except TimestampRejected as exc:
        return problems.problem(401, str(exc)), "rejected_timestamp"
    except MalformedWebhook as exc:
        return problems.problem(400, str(exc)), "malformed"
    job_type = source.spec.job_type(delivery.event)
    if job_type is None:
        detail = (
            f"event {excerpt(delivery.event)} of source {source.name!r} does not make a job type"
        )
        return problems.problem(400, detail), "malformed"
    try:
        submitted = await _submit(
            submitter, _job_request(source, delivery, job_type, body, headers), source.name
        )
    except TaskqError as exc:
        status = problems.status_of(exc)
        retry = _RETRY if status in (409, 503) else None
        result = "unavailable" if status == 503 else "error"
        return problems.problem(status, str(exc), headers=retry), result
    answer = {"id": submitted.job_id, "type": job_type, "delivery_id": delivery.delivery_id}
    if submitted.replayed:
        return JSONResponse(answer, 202, headers={"Idempotent-Replayed": "true"}), "replayed"
    return JSONResponse(answer, status_code=202), "accepted"


KEPT = 50  # deliveries remembered per source


@dataclass(frozen=True, slots=True)
class DeliveryNote:
    """One delivery as the receiver answered it."""

    at: datetime
    result: str  # accepted, replayed (a duplicate, suppressed), rejected_signature, malformed, ...
    status: int
    detail: str  # why it was refused; empty when accepted
    job_id: str | None = None
    delivery_id: str | None = None

    @classmethod
    def of(cls, result: str, response: Response) -> DeliveryNote:
        """Return the note of a delivery from the receiver's JSON answer (a job, or a problem)."""
        answer = orjson.loads(bytes(response.body))
        return cls(
            datetime.now(UTC),
            result,
            response.status_code,
            answer.get("detail", ""),
            answer.get("id"),
            answer.get("delivery_id"),
        )


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    """The latest deliveries of each source, and how many ended how, since the process started."""

    _latest: dict[str, deque[DeliveryNote]] = field(default_factory=dict)
    _counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record(self, source: str, note: DeliveryNote) -> None:
        """Remember one delivery of ``source`` (a configured source: the names are few)."""
        self._latest.setdefault(source, deque(maxlen=KEPT)).appendleft(note)
        self._counts[(source, note.result)] += 1

    def latest(self, source: str) -> list[DeliveryNote]:
        """Return the source's latest deliveries, newest first."""
        return list(self._latest.get(source, ()))

    def counts(self, source: str) -> dict[str, int]:
        """Return how many of the source's deliveries ended with each result."""
        return {result: n for (name, result), n in sorted(self._counts.items()) if name == source}


def delivery_log(app: FastAPI) -> DeliveryLog:
    """Return the app's log of webhook deliveries (made on first use)."""
    log: DeliveryLog | None = getattr(app.state, "webhook_log", None)
    if log is None:
        log = app.state.webhook_log = DeliveryLog()
    return log


def _job_request(
    source: Source, delivery: Delivery, job_type: str, body: bytes, headers: dict[str, str]
) -> JobRequest:
    """Return the job of a verified delivery: the raw body and the headers that matter on it."""
    try:
        text, encoding = body.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode(), "base64"
    payload: dict[str, Any] = {
        "source": source.name,
        "event": delivery.event,
        "delivery_id": delivery.delivery_id,
        "headers": {name: headers[name] for name in source.kept_headers if name in headers},
        "body": text,
        "body_encoding": encoding,
    }
    return JobRequest(
        type=job_type,
        payload=payload,
        priority=source.spec.priority,
        idempotency_key=f"webhook:{source.name}:{delivery.delivery_id}",
        # A retry of one delivery carries a new timestamp and signature: the body decides.
        identity=hashlib.sha256(body).hexdigest(),
        source=webhook_producer(source.name),
    )


async def _submit(submitter: Submitter, job: JobRequest, source: str) -> Submitted:
    """Submit ``job``; a concurrent copy of the same delivery waits for the first one's answer."""
    deadline = time.monotonic() + TWIN_WAIT_S
    while True:
        try:
            # The signature is verified: the source's reserved types may pass.
            return await submitter.submit_reserved(job, producer=webhook_producer(source))
        except IdempotencyInFlightError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(TWIN_POLL_S)
