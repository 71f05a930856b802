"""The built-in ``taskq.callback`` handler: POST a finished job to its callback URL, signed per Standard Webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict
from yarl import URL

from consumers.breaker import Breakers
from consumers.handlers import HandlerRegistry, JobContext, Permanent, Retry
from topology.errors import AddressRefused, DeliveryFailed, DeliveryRejected, OutboundError
from topology.names import CALLBACK_JOB_TYPE
from topology.settings import CallbackSettings
from webhooks.outbound.addresses import AllowList, check_callback_url, display
from webhooks.outbound.client import open_session, post
from webhooks.schemes.standard import sign_standard

MAX_RETRY_AFTER_S = 3600.0  # a receiver's Retry-After is a hint, not a licence to park forever


class CallbackPayload(BaseModel):
    """What a callback job carries: where to, which event, and the finished job's view."""

    model_config = ConfigDict(extra="forbid")

    url: str
    event: str
    job: dict[str, Any]


def endpoint_secret(signing_key: str, url: str) -> str:
    """Return the Standard Webhooks secret (``whsec_...``) of the endpoint at ``url``'s origin."""
    parsed = URL(url)
    origin = f"{parsed.scheme}://{parsed.host}:{parsed.explicit_port or parsed.port}".lower()
    digest = hmac.digest(signing_key.encode(), origin.encode(), hashlib.sha256)
    return "whsec_" + base64.b64encode(digest).decode()


def registration_check(settings: CallbackSettings) -> Callable[[str], Awaitable[str | None]]:
    """Return the check a submitted callback URL passes before its job is accepted (SSRF)."""
    allow = AllowList.parse(settings.callback_allow)

    async def check(url: str) -> str | None:
        try:
            await check_callback_url(url, allow, dns_timeout=settings.callback_dns_timeout)
        except AddressRefused as exc:
            return str(exc)
        except OutboundError:
            return None  # no verdict (DNS trouble now): every delivery attempt checks again
        return None

    return check


async def _bound_job(payload: CallbackPayload, ctx: JobContext) -> str:
    """Return the id of the job the callback announces, refusing (Permanent) a URL not stored with it."""
    job_id = payload.job.get("id")
    if not isinstance(job_id, str) or ctx.lookup_job is None:
        raise Permanent("refused: the callback names no finished job to check its URL against")
    job = await ctx.lookup_job(job_id)
    if job is None:
        raise Permanent(f"refused: the callback names job {job_id!r}, which is not in the store")
    if job.callback_url != payload.url:
        raise Permanent(
            f"refused: {display(URL(payload.url))} is not the callback_url of job {job_id}"
        )
    return job_id


class CallbackDelivery:
    """The built-in ``taskq.callback`` handler of one worker: its settings, HTTP session and breakers."""

    def __init__(self, settings: CallbackSettings) -> None:
        self.settings = settings
        self.allow = AllowList.parse(settings.callback_allow)
        self.breakers = Breakers(
            settings.callback_breaker_threshold, settings.callback_breaker_cooldown
        )
        self._session: aiohttp.ClientSession | None = None

    def register(self, registry: HandlerRegistry) -> None:
        """Make ``registry`` deliver ``taskq.callback`` jobs with this object."""
        registry.handler(CALLBACK_JOB_TYPE)(self.deliver)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def deliver(self, payload: CallbackPayload, ctx: JobContext) -> dict[str, Any]:
        """POST the finished job to its callback URL, signed; raise what the outcome calls for."""
        # The URL is checked against SSRF on every attempt; a refused address or a 4xx
        # dead-letters at once, a 5xx, 429 or network failure is retried, and an endpoint that
        # keeps failing is stopped by its breaker until the cooldown is over.
        if self._session is None or self._session.closed:
            self._session = open_session(self.allow)
        key = self.settings.callback_signing_key
        if key is None:
            raise Permanent("TASKQ_CALLBACK_SIGNING_KEY is not set: callbacks cannot be signed")
        job_id = await _bound_job(payload, ctx)
        origin = str(URL(payload.url).origin())
        breaker = self.breakers.get(origin)
        if not breaker.allow():
            raise Retry(
                f"{origin} keeps failing; its breaker is open", delay=max(breaker.retry_in(), 1)
            )
        message_id = f"cb_{job_id}_{payload.event.removeprefix('job.')}"
        now = int(time.time())
        body = orjson.dumps(
            {"type": payload.event, "timestamp": datetime.now(UTC).isoformat(), "data": payload.job}
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(now),
            "webhook-signature": sign_standard(
                endpoint_secret(key.get_secret_value(), payload.url), message_id, now, body
            ),
        }
        try:
            answer = await post(
                payload.url,
                body,
                headers,
                timeout=self.settings.callback_timeout,
                session=self._session,
                dns_timeout=self.settings.callback_dns_timeout,
            )
        except (AddressRefused, DeliveryRejected) as exc:
            breaker.skip_probe()
            raise Permanent(str(exc)) from exc
        except DeliveryFailed as exc:
            breaker.failed()
            if exc.retry_after is not None:
                raise Retry(str(exc), delay=min(exc.retry_after, MAX_RETRY_AFTER_S)) from exc
            raise
        breaker.succeeded()
        return {"status": answer.status, "webhook_id": message_id}
