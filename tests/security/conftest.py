"""Fixtures for the attack tests: the whole API on the real broker, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.stack import Stack, running, stack_env, store_url
from topology.settings import BrokerSettings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def api_stack(
    request: pytest.FixtureRequest, vhost: BrokerSettings, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Yield the API on a fresh vhost and a fresh job store of each kind."""
    async with (
        store_url(request.param, request, tmp_path) as url,
        running(stack_env(vhost, tmp_path, url), vhost) as stack,
    ):
        yield stack
