"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import subprocess
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from jobstore.model import Claim, JobRecord, JobStore, NewJob
from topology.compiled import CompiledTopology, compile_topology
from topology.loader import parse_topology

MINIMAL = """
groups:
  email:
    jobs: [email]
"""


def compiled(text: str) -> CompiledTopology:
    """Return the topology the dedented YAML ``text`` declares, compiled."""
    return compile_topology(parse_topology(textwrap.dedent(text)))


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


def table_rows(output: str) -> list[dict[str, str]]:
    """Return the rows of the table ``taskctl`` printed in ``output``, by column header.

    A cell folded onto more lines is joined back (without the spaces at its folds); a column
    left out on a narrow terminal is missing from every row.
    """
    lines = output.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.lstrip().startswith("─"))
    header = lines[rule - 1]
    # Headers are apart by three spaces at least (padding and the blank rule between columns).
    starts = [match.start() for match in re.finditer(r"\S+(?: \S+)*", header)]
    spans = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[start:end].strip() for start, end in spans]
    rows: list[dict[str, str]] = []
    for line in lines[rule + 1 :]:
        if not line.strip():  # the blank edge below the table
            break
        cells = [line[start:end].strip() for start, end in spans]
        if cells[0]:
            rows.append(dict(zip(names, cells, strict=True)))
        else:  # a continuation line: the first column never folds, the others may
            for name, cell in zip(names, cells, strict=True):
                rows[-1][name] += cell
    return rows


def wait_healthy(
    base: str,
    process: subprocess.Popen[bytes],
    within: float = 30,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Wait until the API at ``base`` answers ``/readyz``; fail if ``process`` exits first."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # a child process: nothing to await but its port
        assert process.poll() is None, f"{process.args} exited early"
        try:
            if httpx.get(f"{base}/readyz", timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the API did not become ready")


async def create_job(
    store: JobStore, job: JobRecord, *, claim: tuple[str, str] | None = None, lease_s: float = 60.0
) -> Claim:
    """Insert one job through ``create_jobs``, claiming ``claim=(key, request_hash)`` first."""
    [outcome] = await store.create_jobs([NewJob(job, claim, lease_s)])
    return outcome


def interrupted(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop ``process`` as Ctrl-C does and return what it wrote to stdout and stderr meanwhile."""
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    return out, err


def reap(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` if it still runs (a test that failed before stopping it)."""
    if process.poll() is None:
        process.kill()
        process.communicate()


@contextmanager
def scratch_vhost(http: httpx.Client, user: str, prefix: str = "taskq-test") -> Iterator[str]:
    """Create a fresh vhost through the management API ``http`` reaches, open to ``user``; delete it after."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    http.put(f"/api/vhosts/{name}").raise_for_status()
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    http.put(f"/api/permissions/{name}/{user}", json=perms).raise_for_status()
    try:
        yield name
    finally:
        http.delete(f"/api/vhosts/{name}")
