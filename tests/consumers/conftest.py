"""Fixtures for the worker tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.consumers.rig import Rig, started


@pytest.fixture
async def rig(vhost) -> AsyncIterator[Rig]:
    async with started(vhost) as running:
        yield running
