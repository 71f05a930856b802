"""An SSRF-safe HTTP POST: resolve once, check every address, dial the pinned one, never redirect."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from ssl import SSLContext

import aiohttp
from yarl import URL

from webhooks.outbound.addresses import AllowList
from webhooks.outbound.errors import DeliveryFailed
from webhooks.outbound.pinning import PinnedConnector
from webhooks.outbound.responses import BODY_LIMIT, Response, kept_headers, outcome_error
from webhooks.outbound.url_check import (
    DNS_TIMEOUT_S,
    Target,
    check_callback_url,
    display,
    parse_callback_url,
)


def open_session(allow: AllowList, *, ssl: SSLContext | bool = True) -> aiohttp.ClientSession:
    """Return a session for repeated ``post`` calls under ``allow`` (use it as ``async with``)."""
    return aiohttp.ClientSession(
        connector=PinnedConnector(allow, ssl=ssl),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        headers={"Accept-Encoding": "identity"},
    )


async def post(
    url: str | URL,
    body: bytes,
    headers: Mapping[str, str],
    *,
    allow: AllowList,
    # A delivery's time budget is part of its policy (it also bounds DNS and the body read),
    # so it is a parameter rather than left to the caller's asyncio.timeout.
    timeout: float,  # noqa: ASYNC109
    session: aiohttp.ClientSession | None = None,
    dns_timeout: float = DNS_TIMEOUT_S,
) -> Response:
    """POST ``body`` to ``url`` and return the receiver's 2xx answer."""
    if session is not None:
        _pinned_connector(session, allow)  # refuse a foreign session before any DNS query
    shown = display(parse_callback_url(url))
    limit = aiohttp.ClientTimeout(total=timeout)
    try:
        async with asyncio.timeout(timeout):
            target = await check_callback_url(url, allow, dns_timeout=dns_timeout)
            if session is not None:
                response = await _send(session, allow, target, body, headers, limit)
            else:
                async with open_session(allow) as own:
                    response = await _send(own, allow, target, body, headers, limit)
    except TimeoutError as exc:
        raise DeliveryFailed(f"{shown} did not answer within {timeout}s") from exc
    error = outcome_error(response, shown)
    if error is not None:
        raise error
    return response


def _pinned_connector(session: aiohttp.ClientSession, allow: AllowList) -> PinnedConnector:
    connector = session.connector
    if not isinstance(connector, PinnedConnector):
        raise TypeError("post() needs a session from webhooks.outbound.open_session()")
    if connector.allow != allow:
        # Pins checked under one allow-list must not serve calls made under another.
        raise ValueError("the session was opened with a different allow-list")
    return connector


async def _send(
    session: aiohttp.ClientSession,
    allow: AllowList,
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    limit: aiohttp.ClientTimeout,
) -> Response:
    pins = _pinned_connector(session, allow).pins
    with pins.pinned(target.host, target.pinned):
        try:
            async with session.post(
                target.url,
                data=body,
                headers=dict(headers),
                allow_redirects=False,
                timeout=limit,
            ) as reply:
                content = await _read_capped(reply)
                return Response(reply.status, kept_headers(reply.headers), content)
        except aiohttp.ClientError as exc:
            shown = display(target.url)
            raise DeliveryFailed(f"{shown} failed: {type(exc).__name__}: {exc}") from exc


async def _read_capped(reply: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < BODY_LIMIT:
        chunk = await reply.content.read(BODY_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if not reply.content.at_eof():
        # Drop the connection instead of draining an unbounded body to reuse it.
        reply.close()
    return b"".join(chunks)
