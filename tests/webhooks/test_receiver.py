"""POST /webhooks/{source} on the real stack: RabbitMQ, the SQLite job store, every scheme.

Covers the W1-W5 families of reliability.md: forged, tampered, re-serialised and other-secret
deliveries, stale and future timestamps, replays (sequential and concurrent), malformed
headers (never a 500), oversized bodies, and a stopped broker.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from jobstore.model import JobSearch
from jobstore.sqlite import SqliteJobStore
from tests.broker import channel, depth
from tests.helpers import eventually
from tests.producers.test_api_stack import amqp_reachable, rabbitmqctl
from tests.producers.test_api_stack import running as running_app
from tests.webhooks.signing import sign_github, sign_hmac, sign_stripe
from topology.apply import apply_topology
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.settings import ApiSettings, BrokerSettings, load_settings
from webhooks.receiver import webhook_router
from webhooks.schemes.standard import sign_standard

pytestmark = pytest.mark.rabbitmq

GITHUB_SECRET = "It's a Secret to Everybody"
OLD_GITHUB_SECRET = "the secret before the rotation"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRIPE_SECRET = "whsec_stripe_test_secret"
HMAC_SECRET = "acme-shared-secret"

TOPOLOGY = """
groups:
  github: {jobs: ["github.#"]}
  hooks: {jobs: ["webhook.#", "stripe.#", "acme.order"]}
webhooks:
  github: {scheme: github, secret_env: [GH_NEW, GH_OLD], job: "github.{event}"}
  standard: {scheme: standard, secret_env: STD_SECRET, job: "webhook.{event}", priority: high}
  stripe: {scheme: stripe, secret_file: %(stripe_file)s, job: "stripe.{event}"}
  acme:
    scheme: hmac
    secret_env: ACME_SECRET
    header: X-Acme-Signature
    prefix: "sha256="
    timestamp_header: X-Acme-Timestamp
    id_header: X-Acme-Delivery
    job: acme.order
  quiet: {scheme: github, secret_env: NOBODY_SET_THIS, job: "github.{event}"}
"""


@dataclass
class Hooks:
    client: httpx.AsyncClient
    env: dict[str, str]
    broker: BrokerSettings
    store_path: Path

    async def github(
        self,
        body: bytes,
        delivery: str,
        *,
        secret: str = GITHUB_SECRET,
        event: str = "push",
        **extra: str,
    ) -> httpx.Response:
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign_github(secret.encode(), body),
            "Content-Type": "application/json",
            **extra,
        }
        return await self.client.post("/webhooks/github", content=body, headers=headers)

    async def standard(
        self, body: bytes, msg_id: str, *, ts: int | None = None, signature: str | None = None
    ) -> httpx.Response:
        ts = int(time.time()) if ts is None else ts
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": signature or sign_standard(STANDARD_SECRET, msg_id, ts, body),
        }
        return await self.client.post("/webhooks/standard", content=body, headers=headers)

    async def queued(self, queue: str) -> int:
        async with channel(self.broker) as ch:
            return await depth(ch, queue)

    async def payload(self, job_id: str) -> dict:
        store = SqliteJobStore(self.store_path)
        try:
            job = await store.get_job(job_id)
        finally:
            await store.close()
        assert job is not None
        return job.payload

    async def jobs(self) -> int:
        store = SqliteJobStore(self.store_path)
        try:
            return len((await store.list_jobs(JobSearch(limit=100))).jobs)
        finally:
            await store.close()


def running(env: dict[str, str]):
    """Run the app with the webhook router, the way ``taskctl serve`` assembles it."""
    return running_app(
        env,
        ApiSettings(max_body_bytes=64 * 1024),
        routers=[webhook_router(load_settings(env).auth, env)],
    )


@pytest.fixture
async def hooks(vhost: BrokerSettings, tmp_path: Path) -> AsyncIterator[Hooks]:
    stripe_file = tmp_path / "stripe.secret"
    stripe_file.write_text(STRIPE_SECRET + "\n")
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY % {"stripe_file": stripe_file})
    await apply_topology(compile_topology(load_topology(path)), vhost)
    env = {
        "TASKQ_TOPOLOGY": str(path),
        "TASKQ_AMQP_URL": vhost.amqp_url.get_secret_value(),
        "TASKQ_CONFIRM_TIMEOUT": "2",
        "TASKQ_STORE_URL": f"sqlite:///{tmp_path}/jobs.sqlite3",
        "TASKQ_BLOB_URL": f"file:{tmp_path}/blobs",
        "GH_NEW": GITHUB_SECRET,
        "GH_OLD": OLD_GITHUB_SECRET,
        "STD_SECRET": STANDARD_SECRET,
        "ACME_SECRET": HMAC_SECRET,
    }
    async with running(env) as client:
        yield Hooks(client, env, vhost, tmp_path / "jobs.sqlite3")


async def test_a_verified_github_delivery_is_one_job_with_its_raw_body_and_headers(hooks: Hooks):
    body = b'{"ref": "refs/heads/main",  "zen": "Keep it logically awesome."}'
    answer = await hooks.github(body, "d-1", event="push")
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert answer.json()["type"] == "github.push"
    payload = await hooks.payload(job_id)
    assert payload["body"] == body.decode()  # the exact bytes: a handler can verify again
    assert payload["headers"]["x-github-delivery"] == "d-1"
    assert payload["headers"]["x-hub-signature-256"] == sign_github(GITHUB_SECRET.encode(), body)
    assert (payload["source"], payload["event"], payload["body_encoding"]) == (
        "github",
        "push",
        "utf-8",
    )
    assert await hooks.queued("taskq.github") == 1


async def test_replays_sequential_and_concurrent_answer_the_same_job_and_enqueue_once(hooks: Hooks):
    body = b'{"action": "opened"}'
    first = await hooks.github(body, "d-replay", event="issues")
    again = [await hooks.github(body, "d-replay", event="issues") for _ in range(5)]
    racing = await asyncio.gather(*(hooks.github(body, "d-race", event="issues") for _ in range(5)))
    assert first.status_code == 202
    assert {r.status_code for r in again} == {202}
    assert {r.json()["id"] for r in again} == {first.json()["id"]}
    assert all(r.headers["idempotent-replayed"] == "true" for r in again)
    scraped = (await hooks.client.get("/metrics")).text
    replays = 'taskq_job_submissions_total{group="github",outcome="replayed",priority="medium",source="webhook:github"}'
    assert f"{replays} " in scraped
    assert {r.status_code for r in racing} == {202}, [r.text for r in racing]
    assert len({r.json()["id"] for r in racing}) == 1
    assert await hooks.queued("taskq.github") == 2  # one per delivery id, whatever the replays
    assert await hooks.jobs() == 2


async def test_a_standard_webhooks_retry_with_a_new_timestamp_is_the_same_job(hooks: Hooks):
    body = b'{"type": "invoice.paid", "data": {"id": "in_1"}}'
    now = int(time.time())
    first = await hooks.standard(body, "msg_1", ts=now - 60)
    retry = await hooks.standard(
        body, "msg_1", ts=now
    )  # a new attempt: new timestamp, new signature
    assert (first.status_code, retry.status_code) == (202, 202), retry.text
    assert retry.json()["id"] == first.json()["id"]
    assert first.json()["type"] == "webhook.invoice.paid"
    assert await hooks.queued("taskq.hooks") == 1


async def test_forged_tampered_reserialised_and_other_secret_deliveries_are_401_and_not_enqueued(
    hooks: Hooks,
):
    body = b'{"a": 1,"b": [1, 2]}'
    good = sign_github(GITHUB_SECRET.encode(), body)
    tampered = body.replace(b"1", b"2", 1)
    reserialised = json.dumps(json.loads(body)).encode()
    cases = {
        "forged": await hooks.github(body, "f-1", secret="guess"),
        "tampered": await hooks.client.post(
            "/webhooks/github",
            content=tampered,
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": "f-2",
                "X-Hub-Signature-256": good,
            },
        ),
        "re-serialised": await hooks.client.post(
            "/webhooks/github",
            content=reserialised,
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": "f-3",
                "X-Hub-Signature-256": good,
            },
        ),
        "other source's secret": await hooks.github(body, "f-4", secret=HMAC_SECRET),
        "missing": await hooks.client.post(
            "/webhooks/github",
            content=body,
            headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "f-5"},
        ),
    }
    assert {name: r.status_code for name, r in cases.items()} == dict.fromkeys(cases, 401)
    scraped = (await hooks.client.get("/metrics")).text
    assert (
        'taskq_webhook_deliveries_total{result="rejected_signature",source="github"} 5.0' in scraped
    )
    assert all(r.headers["content-type"] == "application/problem+json" for r in cases.values())
    assert await hooks.queued("taskq.github") == 0
    assert await hooks.jobs() == 0


async def test_rotation_accepts_the_old_secret_until_it_is_removed(hooks: Hooks):
    old = await hooks.github(b"{}", "rot-1", secret=OLD_GITHUB_SECRET)
    assert old.status_code == 202
    async with running({**hooks.env, "GH_OLD": ""}) as retired:
        body = b"{}"
        headers = {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "rot-2",
            "X-Hub-Signature-256": sign_github(OLD_GITHUB_SECRET.encode(), body),
        }
        assert (
            await retired.post("/webhooks/github", content=body, headers=headers)
        ).status_code == 401


async def test_standard_timestamps_are_accepted_within_the_tolerance_only(hooks: Hooks):
    assert (
        await hooks.standard(b'{"type": "t"}', "warm-up")
    ).status_code == 202  # lazy set-up done
    results = {}
    for offset in (-299, 299, -301, 301):
        # Rounded: the timestamp is within half a second of now, so the boundaries hold.
        ts = round(time.time()) + offset
        answer = await hooks.standard(b'{"type": "t"}', f"ts{offset}", ts=ts)
        results[offset] = answer.status_code
    assert results == {-299: 202, 299: 202, -301: 401, 301: 401}
    garbage = await hooks.client.post(
        "/webhooks/standard",
        content=b"{}",
        headers={"webhook-id": "g", "webhook-timestamp": "soon", "webhook-signature": "v1,AAAA"},
    )
    assert garbage.status_code == 400, garbage.text
    assert await hooks.queued("taskq.hooks") == 3


async def test_malformed_signature_headers_are_4xx_never_500(hooks: Hooks):
    body = b'{"type": "t"}'
    ts = str(int(time.time()))
    signatures = [
        "",
        "v1",
        "v1,",
        "v1,not base64!!",
        "v2,AAAA",
        "v1a,AAAA",
        " ".join(["v1,AAAA"] * 10_000),
        "v1,\u00e9\u00e9",
        "," * 5000,
    ]
    statuses = []
    started = time.monotonic()
    for signature in signatures:
        headers = {
            "webhook-id": "m",
            "webhook-timestamp": ts,
            "webhook-signature": signature.encode("utf-8"),
        }
        statuses.append(
            (
                await hooks.client.post("/webhooks/standard", content=body, headers=headers)
            ).status_code
        )
    took = time.monotonic() - started
    github_cases = [
        {"X-Hub-Signature-256": "sha256=zz", "X-GitHub-Delivery": "x", "X-GitHub-Event": "push"},
        {"X-Hub-Signature-256": "md5=00", "X-GitHub-Delivery": "x", "X-GitHub-Event": "push"},
        {
            "X-Hub-Signature-256": sign_github(GITHUB_SECRET.encode(), body),
            "X-GitHub-Event": "push",
        },
    ]
    for headers in github_cases:
        statuses.append(
            (await hooks.client.post("/webhooks/github", content=body, headers=headers)).status_code
        )
    stripe_cases = ["t=abc,v1=00", "v1=00", "t=1,v1=", "garbage", "t=1," * 3000]
    for header in stripe_cases:
        statuses.append(
            (
                await hooks.client.post(
                    "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
                )
            ).status_code
        )
    twice = await hooks.client.post(
        "/webhooks/github",
        content=body,
        headers=[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "dup"),
            ("X-Hub-Signature-256", sign_github(GITHUB_SECRET.encode(), body)),
            ("X-Hub-Signature-256", "sha256=00"),
        ],
    )
    statuses.append(twice.status_code)
    assert all(status in (400, 401) for status in statuses), statuses
    assert took < 5, took  # 10,000 signatures cost bounded work
    assert await hooks.jobs() == 0


async def test_stripe_and_generic_hmac_round_trip(hooks: Hooks):
    event = orjson.dumps({"id": "evt_1", "type": "charge.succeeded", "data": {}})
    now = int(time.time())
    stripe = await hooks.client.post(
        "/webhooks/stripe",
        content=event,
        headers={"Stripe-Signature": sign_stripe(STRIPE_SECRET.encode(), now, event)},
    )
    assert stripe.status_code == 202, stripe.text
    assert (stripe.json()["type"], stripe.json()["delivery_id"]) == (
        "stripe.charge.succeeded",
        "evt_1",
    )
    stale = await hooks.client.post(
        "/webhooks/stripe",
        content=event,
        headers={"Stripe-Signature": sign_stripe(STRIPE_SECRET.encode(), now - 301, event)},
    )
    assert stale.status_code == 401
    order = b"order=42&total=9.99"
    signed = sign_hmac(
        HMAC_SECRET.encode(),
        order,
        algorithm="sha256",
        encoding="hex",
        prefix="sha256=",
        timestamp=now,
    )
    acme = await hooks.client.post(
        "/webhooks/acme",
        content=order,
        headers={
            "X-Acme-Signature": signed,
            "X-Acme-Timestamp": str(now),
            "X-Acme-Delivery": "o-42",
        },
    )
    assert acme.status_code == 202, acme.text
    assert (acme.json()["type"], acme.json()["delivery_id"]) == ("acme.order", "o-42")
    assert await hooks.queued("taskq.hooks") == 2


async def test_unknown_sources_sources_without_secrets_and_big_bodies(hooks: Hooks):
    unknown = await hooks.client.post("/webhooks/gitlab", content=b"{}")
    assert unknown.status_code == 404
    assert "sources: acme, github, quiet, standard, stripe" in unknown.json()["detail"]
    quiet = await hooks.github(b"{}", "q-1")
    quiet = await hooks.client.post(
        "/webhooks/quiet", content=b"{}", headers=dict(quiet.request.headers)
    )
    assert quiet.status_code == 503
    assert "NOBODY_SET_THIS" in quiet.json()["detail"]
    big = b"{" + b" " * (128 * 1024) + b"}"
    too_big = await hooks.github(big, "big-1")
    assert too_big.status_code == 413
    assert await hooks.jobs() == 1  # only the first (github) delivery of this test


@pytest.mark.broker_admin
async def test_503_while_the_broker_is_stopped_and_nothing_is_lost_after(hooks: Hooks):
    body = b'{"n": 1}'
    rabbitmqctl("stop_app")
    try:
        down = await hooks.github(body, "outage-1")
        assert down.status_code == 503, down.text
        assert down.headers["retry-after"] == "5"
    finally:
        rabbitmqctl("start_app")
        await eventually(lambda: amqp_reachable(hooks.broker), within=60)

    async def accepted() -> bool:
        return (await hooks.github(body, "outage-1")).status_code == 202

    # The sender retries the same delivery: once the broker is back it is enqueued, once.
    await eventually(accepted, within=30)
    assert await hooks.queued("taskq.github") == 1
    assert await hooks.jobs() == 1
