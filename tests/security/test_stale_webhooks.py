"""Stale or future deliveries: Standard Webhooks and generic HMAC refuse them at the tolerance.

A captured delivery replayed after its window (or signed ahead of it) answers 401 and
enqueues nothing; one inside the window is a job. The tolerance is 300 s; the receiver reads
the clock itself, so the offsets keep two seconds from the edge on either side.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.security.stack import ACME_SECRET, STANDARD_SECRET, Stack
from tests.webhooks.signing import sign_hmac
from webhooks.schemes.standard import sign_standard

pytestmark = pytest.mark.rabbitmq
OFFSETS = [(-302, 401), (-298, 202), (298, 202), (302, 401)]


async def send_standard(client: httpx.AsyncClient, offset: int) -> httpx.Response:
    body = b'{"type": "invoice.paid"}'
    ts = int(time.time()) + offset
    msg_id = f"msg_{offset}"
    return await client.post(
        "/webhooks/standard",
        content=body,
        headers={
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign_standard(STANDARD_SECRET, msg_id, ts, body),
            "content-type": "application/json",
        },
    )


async def send_hmac(client: httpx.AsyncClient, offset: int) -> httpx.Response:
    body = b"order=42&total=9.99"
    ts = int(time.time()) + offset
    signed = sign_hmac(ACME_SECRET.encode(), body, prefix="sha256=", timestamp=ts)
    return await client.post(
        "/webhooks/acme",
        content=body,
        headers={
            "X-Acme-Signature": signed,
            "X-Acme-Timestamp": str(ts),
            "X-Acme-Delivery": f"o-{offset}",
            "X-Acme-Event": "order",
        },
    )


@pytest.mark.parametrize("send", [send_standard, send_hmac], ids=["standard", "hmac"])
async def test_deliveries_outside_the_tolerance_are_refused_and_enqueue_nothing(
    api_stack: Stack, send
):
    answers = {offset: await send(api_stack.client, offset) for offset, _ in OFFSETS}
    assert {o: a.status_code for o, a in answers.items()} == dict(OFFSETS), {
        o: a.text for o, a in answers.items()
    }
    stale, ahead = answers[-302].json()["detail"], answers[302].json()["detail"]
    assert re.fullmatch(r"signed 30[23] s ago, past the 300 s tolerance", stale), stale
    assert re.fullmatch(r"signed 30[12] s in the future, past the 300 s tolerance", ahead), ahead
    # Only the two inside the window became jobs and messages.
    assert len(await api_stack.jobs()) == 2
    assert await api_stack.occupied() == {"taskq.hooks": 2}
