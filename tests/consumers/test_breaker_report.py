"""The breaker report: metrics at once, store rows in the background, never an error into a job."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from loguru import logger

from consumers.breaker import BreakerReport, Breakers
from consumers.metrics import WorkerMetrics
from jobstore.model import BreakerRecord
from tests.fakes.store import InMemoryJobStore
from topology.errors import StoreUnavailableError

NOW = datetime(2026, 11, 27, 21, 6, 11, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def group() -> str:
    return f"g{uuid.uuid4().hex[:8]}"


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    heard: list[str] = []
    sink = logger.add(heard.append, level="WARNING", format="{message}")
    try:
        yield heard
    finally:
        logger.remove(sink)


def state(metrics: WorkerMetrics, group: str, dependency: str) -> float | None:
    return metrics.registry.get_sample_value(
        "taskq_breaker_state", {"group": group, "dependency": dependency}
    )


def transitions(metrics: WorkerMetrics, group: str, dependency: str, to: str) -> float | None:
    return metrics.registry.get_sample_value(
        "taskq_breaker_transitions_total", {"group": group, "dependency": dependency, "to": to}
    )


def rig(
    store: InMemoryJobStore, group: str, metrics: WorkerMetrics
) -> tuple[BreakerReport, Breakers, Clock]:
    clock = Clock()
    report = BreakerReport(store, group, worker="host-a:101", metrics=metrics, clock=lambda: NOW)
    return report, Breakers(threshold=2, cooldown=10, clock=clock, on_change=report.changed), clock


async def test_each_transition_sets_the_gauge_counts_and_records_the_row(
    group: str, metrics: WorkerMetrics
):
    store = InMemoryJobStore()
    report, breakers, clock = rig(store, group, metrics)
    smtp = breakers.get("smtp")
    smtp.failed()
    assert state(metrics, group, "smtp") is None  # closed and never changed: nothing to report yet
    smtp.failed()
    assert state(metrics, group, "smtp") == 2
    assert transitions(metrics, group, "smtp", "open") == 1
    await report.flush()
    assert await store.list_breakers(group) == [
        BreakerRecord(group, "smtp", "host-a:101", "open", 2, NOW)
    ]
    clock.now = 10
    assert smtp.allow()
    assert state(metrics, group, "smtp") == 1
    smtp.succeeded()
    assert state(metrics, group, "smtp") == 0
    assert [transitions(metrics, group, "smtp", to) for to in ("open", "half_open", "closed")] == [
        1,
        1,
        1,
    ]
    await report.flush()
    assert await store.list_breakers(group) == [
        BreakerRecord(group, "smtp", "host-a:101", "closed", 0, NOW)
    ]


async def test_a_failing_store_is_logged_and_never_reaches_the_job(
    group: str, metrics: WorkerMetrics, warnings: list[str]
):
    store = InMemoryJobStore()
    store.fail_with = StoreUnavailableError("the store is down")
    report, breakers, _ = rig(store, group, metrics)
    breakers.get("smtp").failed()
    breakers.get("smtp").failed()  # no exception here, on the job's path
    assert state(metrics, group, "smtp") == 2
    await report.flush()
    assert warnings == [f"breaker smtp of group {group} not recorded as open: the store is down\n"]
    store.fail_with = None
    breakers.get("db").failed()
    breakers.get("db").failed()
    await report.flush()
    assert [b.dependency for b in await store.list_breakers(group)] == ["db"]


async def test_a_slow_store_gets_each_dependency_s_latest_state_in_order(
    group: str, metrics: WorkerMetrics
):
    class Gated(InMemoryJobStore):
        def __init__(self) -> None:
            super().__init__()
            self.gate = asyncio.Event()
            self.written: list[tuple[str, str]] = []

        async def record_breaker(self, breaker: BreakerRecord) -> None:
            await self.gate.wait()
            self.written.append((breaker.dependency, breaker.state))
            await super().record_breaker(breaker)

    store = Gated()
    report, breakers, clock = rig(store, group, metrics)
    for name in ("smtp", "db"):
        breakers.get(name).failed()
        breakers.get(name).failed()
    await asyncio.sleep(0)  # the writer takes smtp's open row and waits at the gate
    clock.now = 10
    assert breakers.get("smtp").allow()
    breakers.get("smtp").succeeded()
    store.gate.set()
    await report.flush()
    # smtp's half-open never reached the store: closed replaced it while it waited.
    assert store.written == [("smtp", "open"), ("db", "open"), ("smtp", "closed")]
    assert [(b.dependency, b.state) for b in await store.list_breakers(group)] == [
        ("db", "open"),
        ("smtp", "closed"),
    ]


async def test_closing_forgets_this_worker_s_rows_and_records_no_more(
    group: str, metrics: WorkerMetrics
):
    store = InMemoryJobStore()
    other = BreakerRecord(group, "smtp", "host-b:202", "open", 5, NOW)
    await store.record_breaker(other)
    report, breakers, _ = rig(store, group, metrics)
    breakers.get("smtp").failed()
    breakers.get("smtp").failed()
    await report.close()  # the queued row lands first, then this worker's rows go
    assert await store.list_breakers(group) == [other]
    breakers.get("smtp").succeeded()  # a job still draining: metrics only
    await report.flush()
    assert state(metrics, group, "smtp") == 0
    assert await store.list_breakers(group) == [other]


async def test_a_store_down_at_close_is_logged(
    group: str, metrics: WorkerMetrics, warnings: list[str]
):
    store = InMemoryJobStore()
    report, _, _ = rig(store, group, metrics)
    store.fail_with = StoreUnavailableError("the store is down")
    await report.close()
    assert warnings == ["breaker rows of worker host-a:101 not deleted: the store is down\n"]


def test_a_worker_is_named_by_host_and_process():
    host, _, pid = BreakerReport(InMemoryJobStore(), "g").worker.rpartition(":")
    assert host
    assert int(pid) > 0
