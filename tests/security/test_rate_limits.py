"""Token buckets per credential and per webhook source: 429 with Retry-After, counted, contained."""

from __future__ import annotations

import orjson
import pytest

from tests.security.conftest import GITHUB_SECRET, Door, Opener
from tests.webhooks.signing import sign_github

pytestmark = pytest.mark.rabbitmq

LIMITS = {
    "TASKQ_RATE_LIMIT": "1",
    "TASKQ_RATE_BURST": "3",
    "TASKQ_WEBHOOK_RATE_LIMIT": "1",
    "TASKQ_WEBHOOK_RATE_BURST": "2",
}


def counted(scrape: str, door: str) -> float:
    for line in scrape.splitlines():
        if line.startswith(f'taskq_rate_limited_total{{door="{door}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_credential_over_its_burst_gets_429_and_others_do_not(open_door: Opener) -> None:
    async with open_door(LIMITS) as door:
        busy, calm = await door.key(), await door.key()
        async with door.client(busy) as caller:
            answers = [
                await caller.post("/jobs", json={"type": "email", "delay": 600}) for _ in range(6)
            ]
        assert [a.status_code for a in answers] == [202, 202, 202, 429, 429, 429]
        refused = answers[3]
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["detail"] == "too many requests for this credential; the limit is 1/s"
        assert len(await door.stored()) == 3  # the refused ones stored nothing
        async with door.client(calm) as other:
            assert (
                await other.post("/jobs", json={"type": "email", "delay": 600})
            ).status_code == 202
            metrics = (await other.get("/metrics")).text
        assert counted(metrics, "api") == 3


async def _deliver(door: Door, delivery: str) -> int:
    body = orjson.dumps({"ref": "refs/heads/main"})
    async with door.client() as sender:
        answer = await sender.post(
            "/webhooks/github",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": sign_github(GITHUB_SECRET.encode(), body),
            },
        )
    return answer.status_code


async def test_a_webhook_source_over_its_burst_gets_429_before_verification(
    open_door: Opener,
) -> None:
    async with open_door(LIMITS) as door:
        statuses = [await _deliver(door, f"delivery-{n}") for n in range(4)]
        assert statuses == [202, 202, 429, 429]
        async with door.client() as forger:
            # Over the limit, even a forgery is refused before its signature is computed.
            forged = await forger.post(
                "/webhooks/github",
                content=b"{}",
                headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "x"},
            )
        assert forged.status_code == 429
        assert forged.headers["retry-after"] == "1"
        assert (await door.published()).get("taskq.github") == 2
        async with door.client(await door.key()) as watcher:
            metrics = (await watcher.get("/metrics")).text
        assert counted(metrics, "webhook:github") == 3
        assert (
            'taskq_webhook_deliveries_total{result="rate_limited",source="github"} 3.0' in metrics
        )
