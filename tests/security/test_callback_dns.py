"""A callback host whose DNS never answers holds neither a submission nor a delivery.

The lookup has its own deadline (``TASKQ_CALLBACK_DNS_TIMEOUT``): past it a submitted URL has
no verdict (every delivery checks it again) and a delivery fails to be retried, with nothing
dialled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.security.stack import Stack
from topology.errors import DeliveryFailed
from webhooks.outbound.addresses import AllowList
from webhooks.outbound.client import open_session, post

pytestmark = pytest.mark.rabbitmq
SLOW = "slow.example.test"


@pytest.fixture(autouse=True)
async def silent_dns(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """Make lookups of SLOW hang until the test ends; record every lookup of it."""
    monkeypatch.setenv("TASKQ_CALLBACK_DNS_TIMEOUT", "0.3")
    loop = asyncio.get_running_loop()
    real, never = loop.getaddrinfo, asyncio.Event()
    asked: list[str] = []

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> Any:
        if host != SLOW:
            return await real(host, port, **kwargs)
        asked.append(host)
        await never.wait()
        raise OSError("released at the end of the test")

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    yield asked
    never.set()


async def test_a_delivery_to_a_silent_resolver_fails_in_time_without_dialling(
    silent_dns: list[str], monkeypatch: pytest.MonkeyPatch
):
    loop = asyncio.get_running_loop()
    dialled: list[Any] = []
    monkeypatch.setattr(loop, "sock_connect", lambda sock, address: dialled.append(address))
    async with asyncio.timeout(10):  # the call's own budget is a minute
        with pytest.raises(DeliveryFailed) as failed:
            async with open_session(AllowList()) as session:
                await post(
                    f"http://{SLOW}/hook", b"{}", {}, session=session, timeout=60, dns_timeout=0.3
                )
    assert str(failed.value) == f"DNS did not resolve {SLOW} within 0.3s, for http://{SLOW}/hook"
    assert silent_dns == [SLOW]
    assert dialled == []


async def test_a_submission_with_a_silent_callback_host_is_answered_in_time(
    api_stack: Stack, silent_dns: list[str]
):
    async with asyncio.timeout(10):
        answer = await api_stack.client.post(
            "/jobs", json={"type": "work.a", "callback_url": f"http://{SLOW}/hook"}
        )
    # No verdict on the URL yet, so the job is taken; each delivery resolves it again.
    assert answer.status_code == 202, answer.text
    assert silent_dns == [SLOW]
    [job] = await api_stack.jobs()
    assert job.callback_url == f"http://{SLOW}/hook"
    assert await api_stack.occupied() == {"taskq.work": 1}
