"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

MINIMAL = """
groups:
  email:
    jobs: [email]
"""


def write_topology(tmp_path: Path, text: str, name: str = "topology.yaml") -> Path:
    """Write dedented YAML ``text`` under ``tmp_path`` and return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float, every: float = 0.2
) -> None:
    """Wait until ``check()`` is true, at most ``within`` seconds.

    For state outside this process (a broker, a server, a child process) that offers no
    event to await; everything inside the process should wait on events instead.
    """
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(every)
