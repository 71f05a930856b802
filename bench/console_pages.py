"""The console's pages over a large store: how long each takes to render, median and p95.

Usage: .venv/bin/python bench/console_pages.py [--jobs 100000] [--groups 50] [--requests 40]
                                               [--postgres URL] [--json FILE]

Needs RabbitMQ (a scratch vhost holding a topology of ``--groups`` groups, deleted afterwards).
Fills a SQLite store (and, with ``--postgres``, a scratch PostgreSQL database) with ``--jobs``
jobs spread over the groups' types, statuses, two tenants, correlation ids and creation times
over 30 days, a history of failed attempts for every dead or retried job, breakers and their
transitions; puts 200 dead letters in one group's DLQ; runs an autoscaler (its actuator a
stand-in that only counts) serving ``/status``. Then the whole API app (``taskctl up``'s)
answers over httpx's ASGI transport, as an admin's session: every page is asked ``--requests``
times after a warm-up, and each page's median and p95 are printed. The overview re-reads the
broker every 2 s and the store's counts every 10 s, so its p95 includes those reads.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from loguru import logger

from consumers.autoscaler.loop import Autoscaler
from consumers.autoscaler.signals import SignalReader
from consumers.dispatch import DeadReason, dead
from jobstore.model import (
    BreakerRecord,
    JobEvent,
    JobEventKind,
    JobRecord,
    JobStatus,
    JobStore,
    NewJob,
    open_store,
)
from producers.auth.authenticator import open_authenticator
from producers.auth.principal import Scope
from producers.publisher import ConfirmedPublisher
from taskctl.assembly import api_app
from tests.broker import TestsManagementClient
from tests.conftest import scratch_database
from tests.credentials import issue_key
from tests.taskctl.console_client import log_in
from tests.taskctl.test_up import free_port
from topology.apply import apply_topology
from topology.compiled import CompiledTopology, compile_topology
from topology.envelope import Envelope, new_job_id
from topology.loader import parse_topology
from topology.names import Priority
from topology.settings import Settings, load_settings

BATCH = 2000
TENANTS = ("default", "acme")
STATUSES = (  # weights: mostly finished, as a store kept for days is
    (JobStatus.SUCCEEDED, 80),
    (JobStatus.DEAD, 5),
    (JobStatus.FAILED, 1),
    (JobStatus.QUEUED, 8),
    (JobStatus.RETRYING, 3),
    (JobStatus.RUNNING, 2),
    (JobStatus.CANCELLED, 1),
)
SECRETS = {
    "TASKQ_WEBHOOK_GITHUB_SECRET": "bench-secret",
    "TASKQ_WEBHOOK_HOOKS_SECRET": "whsec_" + base64.b64encode(b"b" * 32).decode(),
}


def topology_text(groups: int) -> str:
    """Return a topology of ``groups`` groups (``g00`` takes ``g00.#``) and two webhook sources."""
    lines = ["groups:"]
    for n in range(groups):
        lines.append(f"  g{n:02d}: {{jobs: ['g{n:02d}.#'], scale: {{min: 1, max: 8}}}}")
    lines += [
        "webhooks:",
        "  github: {scheme: github, secret_env: TASKQ_WEBHOOK_GITHUB_SECRET, job: 'g00.{event}'}",
        "  hooks: {scheme: standard, secret_env: TASKQ_WEBHOOK_HOOKS_SECRET, job: 'g01.{event}'}",
    ]
    return "\n".join(lines) + "\n"


def id_at(when: datetime, rng: random.Random) -> str:
    """Return a UUIDv7 made at ``when``, as a job created then has (a time filter's id range needs it)."""
    ms = int(when.timestamp() * 1000)
    value = ms << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0x2 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def make_job(rng: random.Random, groups: int, now: datetime) -> tuple[JobRecord, list[JobEvent]]:
    """Return one job as a store kept for 30 days holds it, with the events of its failures."""
    created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
    status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
    group = rng.randrange(groups)
    kind = rng.choice(("work", "sync", "notify"))
    failures = 0
    if status in (JobStatus.DEAD, JobStatus.RETRYING):
        failures = rng.randint(1, 6)
    started = created + timedelta(seconds=1) if status is not JobStatus.QUEUED else None
    finished = started + timedelta(seconds=2) if started and status.terminal else None
    job = JobRecord(
        id=id_at(created, rng),
        type=f"g{group:02d}.{kind}",
        status=status,
        priority=rng.choice(list(Priority)),
        created_at=created,
        updated_at=finished or started or created,
        payload={"to": f"user{rng.randrange(10_000)}@example.com", "n": rng.randrange(1000)},
        attempts=failures + (0 if status is JobStatus.QUEUED else 1),
        correlation_id=f"order-{rng.randrange(20_000)}" if rng.random() < 0.3 else None,
        started_at=started,
        finished_at=finished,
        last_error="ConnectionError: refused" if failures else None,
        result={"ok": True} if status is JobStatus.SUCCEEDED else None,
        tenant=TENANTS[0] if rng.random() < 0.9 else TENANTS[1],
    )
    events = [
        JobEvent(
            job.id,
            created + timedelta(seconds=attempt),
            JobEventKind.DEAD
            if status is JobStatus.DEAD and attempt == failures
            else JobEventKind.RETRIED,
            attempt,
            f"ConnectionError: attempt {attempt} refused",
            took_ms=rng.randrange(5, 3000),
            delay_ms=1000 * 2**attempt,
        )
        for attempt in range(1, failures + 1)
    ]
    return job, events


async def fill(store: JobStore, jobs: int, groups: int) -> tuple[str, str]:
    """Write ``jobs`` jobs, their events, breakers and transitions; return a dead job's id and a correlation id."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    sample_dead, sample_correlation = "", ""
    for start in range(0, jobs, BATCH):
        made = [make_job(rng, groups, now) for _ in range(min(BATCH, jobs - start))]
        await store.create_jobs([NewJob(job) for job, _ in made])
        await store.record_events([e for _, events in made for e in events])
        for job, events in made:
            if job.status is JobStatus.DEAD and len(events) >= 3 and job.tenant == TENANTS[0]:
                sample_dead = sample_dead or job.id
            if job.correlation_id and job.tenant == TENANTS[0]:
                sample_correlation = sample_correlation or job.correlation_id
    for n in range(300):
        state = ("open", "half_open", "closed")[n % 3]
        at = now - timedelta(minutes=300 - n)
        record = BreakerRecord(f"g{n % groups:02d}", "smtp", f"host:{n % 7}", state, n % 6, at)
        await store.record_breaker(record)
    return sample_dead, sample_correlation


async def dead_letters(settings: Settings, topology: CompiledTopology, count: int) -> None:
    """Publish ``count`` dead letters into ``g00``'s DLQ, as a worker dead-letters them."""
    publisher = await ConfirmedPublisher.connect(settings.broker, topology)
    try:
        for n in range(count):
            made = datetime.now(UTC)
            envelope = Envelope(id=new_job_id(), type="g00.work", payload={"n": n}, created_at=made)
            action = dead(
                envelope, DeadReason.EXHAUSTED, f"Boom {n}", group="g00", topology=topology
            )
            await publisher.publish(action.envelope, action.route)  # type: ignore[arg-type]
    finally:
        await publisher.close()


class Counted:
    """An actuator that only counts: the autoscaler decides and records, nothing is spawned."""

    def __init__(self) -> None:
        self.workers: dict[str, int] = {}

    async def current(self, group: str) -> int:
        return self.workers.get(group, 1)

    async def scale(self, group: str, workers: int) -> None:
        self.workers[group] = workers


@contextlib.asynccontextmanager
async def autoscaler(
    settings: Settings, topology: CompiledTopology, store: JobStore
) -> AsyncIterator[int]:
    """Run an autoscaler's ``/status`` after two steps over the vhost; yield its port."""
    reader = SignalReader(settings.broker)
    scaler = Autoscaler(topology, reader, Counted())
    await scaler.step()
    await scaler.step()
    port = free_port()
    runner = await scaler.serve(
        open_authenticator(store, settings.auth), host="127.0.0.1", port=port
    )
    try:
        yield port
    finally:
        await runner.cleanup()
        await reader.close()


async def time_pages(
    client: httpx.AsyncClient, pages: Sequence[tuple[str, str]], requests: int
) -> dict[str, list[float]]:
    """Ask every page ``requests`` times, interleaved, after one warm-up each; seconds per answer."""
    timings: dict[str, list[float]] = {name: [] for name, _ in pages}
    for name, path in pages:  # the first answer is timed apart: nothing cached yet
        began = time.perf_counter()
        answer = await client.get(path)
        timings[f"{name} (first)"] = [time.perf_counter() - began]
        if answer.status_code != 200:
            raise SystemExit(f"{name} ({path}) answered {answer.status_code}: {answer.text[:300]}")
    for _ in range(requests):
        for name, path in pages:
            began = time.perf_counter()
            answer = await client.get(path)
            timings[name].append(time.perf_counter() - began)
            if answer.status_code != 200:
                raise SystemExit(f"{name} ({path}) answered {answer.status_code}")
    return timings


def pages_of(dead_job: str, correlation: str) -> list[tuple[str, str]]:
    """Return every page the bench asks for, named."""
    month = (datetime.now(UTC) - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M")
    week = (datetime.now(UTC) - timedelta(days=13)).strftime("%Y-%m-%dT%H:%M")
    return [
        ("overview", "/console/"),  # first: the store's queued counts are read then
        ("jobs: no filter", "/console/jobs"),
        ("jobs: type and status", "/console/jobs?type=g07.work&status=dead"),
        ("jobs: status, rare", "/console/jobs?status=cancelled"),
        ("jobs: correlation id", f"/console/jobs?correlation_id={correlation}"),
        ("jobs: created, a week", f"/console/jobs?created_from={month}&created_before={week}"),
        (
            "jobs: type, a week",
            f"/console/jobs?type=g03.sync&created_from={month}&created_before={week}",
        ),
        ("a job (with its timeline)", f"/console/jobs/{dead_job}"),
        ("dead letters of g00", "/console/dlq/g00"),
        ("topology", "/console/topology"),
        ("webhooks", "/console/webhooks"),
        ("scaling", "/console/scaling"),
    ]


async def measure_store(
    label: str, store_url: str, base: Settings, topology_path: Path, opts: argparse.Namespace
) -> list[dict[str, Any]]:
    """Fill the store at ``store_url``, serve the console over it, and time every page."""
    environ = {"TASKQ_STORE_URL": store_url, "TASKQ_TOPOLOGY": str(topology_path), **SECRETS}
    settings = load_settings(environ).model_copy(update={"broker": base.broker})
    store = open_store(store_url)
    await store.migrate()
    began = time.perf_counter()
    dead_job, correlation = await fill(store, opts.jobs, opts.groups)
    filled = time.perf_counter() - began
    key = await issue_key(store, scopes=(Scope.ADMIN, Scope.JOBS_READ), name="bench")
    topology = compile_topology(parse_topology(topology_text(opts.groups)))
    async with autoscaler(settings, topology, store) as port:
        settings = settings.model_copy(
            update={"autoscaler": settings.autoscaler.model_copy(update={"autoscaler_port": port})}
        )
        app = api_app(settings, environ=environ)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1"
            ) as client:
                for source in ("github", "hooks"):  # refused deliveries, for the webhooks page
                    for n in range(30):
                        await client.post(f"/webhooks/{source}", content=orjson.dumps({"n": n}))
                await log_in(client, key)
                timings = await time_pages(client, pages_of(dead_job, correlation), opts.requests)
    await store.close()
    print(f"\n{label}: {opts.jobs:,} jobs filled in {filled:.1f} s, {opts.groups} groups")
    print("| page | first, ms | median, ms | p95, ms |")
    print("|---|---|---|---|")
    rows = []
    for name, seconds in timings.items():
        if name.endswith(" (first)"):
            continue
        ms = sorted(s * 1000 for s in seconds)
        median, p95 = statistics.median(ms), ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        first = timings[f"{name} (first)"][0] * 1000
        print(f"| {name} | {first:.1f} | {median:.1f} | {p95:.1f} |")
        row = {"store": label, "page": name, "first_ms": first, "median_ms": median, "p95_ms": p95}
        rows.append(row)
    return rows


async def main(opts: argparse.Namespace) -> list[dict[str, Any]]:
    logger.remove()  # the autoscaler's notes on a fresh vhost without statistics: not the point
    logger.add(sys.stderr, level="ERROR")
    base = load_settings({})
    vhost = f"taskq-bench-console-{uuid.uuid4().hex[:8]}"
    rows: list[dict[str, Any]] = []
    async with TestsManagementClient(base.broker) as management:
        await management.create_vhost(vhost)
        try:
            base = base.model_copy(update={"broker": base.broker.with_vhost(vhost)})
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "topology.yaml"
                path.write_text(topology_text(opts.groups))
                topology = compile_topology(parse_topology(topology_text(opts.groups)))
                await apply_topology(topology, base.broker)
                await dead_letters(base, topology, 200)
                sqlite = f"sqlite:///{folder}/jobs.sqlite3"
                rows += await measure_store("SQLite", sqlite, base, path, opts)
                if opts.postgres:
                    async with scratch_database(opts.postgres) as dsn:
                        rows += await measure_store("PostgreSQL", dsn, base, path, opts)
        finally:
            await management.delete_vhost(vhost)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL: also time that store")
    parser.add_argument("--json", default="", help="write the figures to this file")
    options = parser.parse_args()
    figures = asyncio.run(main(options))
    if options.json:
        Path(options.json).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
