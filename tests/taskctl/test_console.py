"""The console's doors over httpx, on in-memory twins: login, sessions, CSRF, scopes, job search."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from jobstore.model import JobEvent, JobEventKind, JobRecord, JobStatus
from producers.api.app import Services, create_app
from producers.auth.principal import Scope
from producers.submit import Submitter
from taskctl.console import console_door
from tests.credentials import issue_key
from tests.fakes.blobs import InMemoryBlobStore
from tests.fakes.publisher import InMemoryPublisher
from tests.fakes.store import InMemoryJobStore
from tests.helpers import create_job
from tests.producers.test_store import job as stored_job
from tests.taskctl.console_client import csrf_of, log_in
from topology.compiled import CompiledTopology
from topology.settings import BrokerSettings

BASE = "http://taskq.test"
NOBODY = SecretStr("http://guest:guest@127.0.0.1:1")  # no management API: the overview says so


@dataclass
class Console:
    client: httpx.AsyncClient
    store: InMemoryJobStore
    admin_key: str
    reader_key: str


@pytest.fixture
async def console(topology: CompiledTopology) -> AsyncIterator[Console]:
    store = InMemoryJobStore()
    submitter = Submitter(topology, InMemoryPublisher(topology), store, InMemoryBlobStore())
    broker = BrokerSettings(management_url=NOBODY, management_timeout=2)
    app = create_app(Services(submitter), own_doors=[console_door(broker)])
    admin_key = await issue_key(store, scopes=(Scope.ADMIN, Scope.JOBS_READ), name="on-call")
    reader_key = await issue_key(store, scopes=(Scope.JOBS_READ,), name="reader")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Console(client, store, admin_key, reader_key)


def job(n: int, **changes: Any) -> JobRecord:
    """Return a finished job created ``n`` minutes into 2026-03-01."""
    at = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=n)
    return stored_job(
        **{"created_at": at, "updated_at": at, "status": JobStatus.SUCCEEDED} | changes
    )


async def test_pages_send_strangers_to_the_login_form_and_refuse_their_streams(console: Console):
    page = await console.client.get("/console/jobs")
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=/console/jobs"
    stream = await console.client.get(
        "/console/overview/events", headers={"Accept": "text/event-stream"}
    )
    assert stream.status_code == 401
    post = await console.client.post("/console/dlq/email/purge", data={"confirm": "email"})
    assert post.status_code == 401
    # The API's own doors still want a bearer credential: the console's prefix opens only itself.
    assert (await console.client.get("/jobs")).status_code == 401


async def test_login_sets_an_http_only_strict_cookie_that_is_not_the_key(console: Console):
    answer = await log_in(console.client, console.admin_key)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"
    cookie = next(
        h for h in answer.headers.get_list("set-cookie") if h.startswith("taskq_console=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert console.admin_key not in cookie
    assert console.admin_key.split("_")[1] not in cookie  # not even the key's id
    overview = await console.client.get("/console/")
    assert overview.status_code == 200
    assert "<h1>Overview</h1>" in overview.text
    assert "figures are unavailable" in overview.text
    assert overview.headers["content-security-policy"].startswith("default-src 'none'")
    assert "on-call" in overview.text  # who is logged in


async def test_a_wrong_key_or_a_forged_login_form_starts_no_session(console: Console):
    wrong = await log_in(console.client, "tq_0123456789abcdef_" + "x" * 43)
    assert wrong.status_code == 401
    assert "unknown or wrong API key" in wrong.text
    assert "taskq_console=" not in wrong.headers.get("set-cookie", "")
    # A page of another site posting the login form has no token that matches the cookie.
    forged = await console.client.post(
        "/console/login", data={"token": "guessed", "credential": console.admin_key}
    )
    assert forged.status_code == 403
    assert "taskq_console=" not in forged.headers.get("set-cookie", "")


async def test_a_credential_without_jobs_read_or_admin_cannot_log_in(console: Console):
    writer = await issue_key(console.store, scopes=(Scope.JOBS_WRITE,))
    answer = await log_in(console.client, writer)
    assert answer.status_code == 403
    assert "needs a credential with jobs:read or admin" in answer.text


async def test_a_post_without_the_sessions_csrf_token_is_refused(console: Console):
    await log_in(console.client, console.admin_key)
    form = {"confirm": "email", "all": "1"}
    missing = await console.client.post("/console/dlq/email/purge", data=form)
    assert missing.status_code == 403
    assert "CSRF token is missing or stale" in missing.text
    stale = await console.client.post("/console/dlq/email/purge", data={**form, "csrf": "old"})
    assert stale.status_code == 403
    page = await console.client.get("/console/jobs")
    token = csrf_of(page)
    other_site = await console.client.post(
        "/console/logout", data={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert other_site.status_code == 403
    assert (await console.client.get("/console/jobs")).status_code == 200  # still logged in


async def test_a_jobs_read_session_sees_no_admin_controls_and_its_admin_posts_get_403(
    console: Console,
):
    await create_job(console.store, job(1, status=JobStatus.DEAD, last_error="boom"))
    answer = await log_in(console.client, console.reader_key)
    assert answer.headers["location"] == "/console/jobs"
    listing = await console.client.get("/console/jobs")
    assert "Dead letters" not in listing.text
    assert "Overview" not in listing.text
    dead = next(j for j in console.store.jobs.values())
    page = await console.client.get(f"/console/jobs/{dead.id}")
    assert page.status_code == 200
    assert "Replay" not in page.text
    token = csrf_of(page)
    for path in ("/console/dlq/email/replay", "/console/dlq/email/purge"):
        crafted = await console.client.post(
            path, data={"csrf": token, "id": dead.id, "confirm": "email", "all": "1"}
        )
        assert crafted.status_code == 403, path
        assert "needs a credential with the admin scope" in crafted.text
    assert (await console.client.get("/console/")).status_code == 403
    assert (await console.client.get("/console/dlq/email")).status_code == 403
    assert console.store.audit == {}


async def test_logout_ends_the_session_for_good(console: Console):
    await log_in(console.client, console.reader_key)
    page = await console.client.get("/console/jobs")
    cookie = console.client.cookies["taskq_console"]
    done = await console.client.post("/console/logout", data={"csrf": csrf_of(page)})
    assert done.status_code == 303
    assert done.headers["location"] == "/console/login"
    console.client.cookies.set("taskq_console", cookie, path="/console")  # a copy kept aside
    assert (await console.client.get("/console/jobs")).status_code == 303


async def test_a_revoked_key_ends_its_session(console: Console):
    await log_in(console.client, console.reader_key)
    assert (await console.client.get("/console/jobs")).status_code == 200
    key_id = console.reader_key.split("_")[1]
    await console.store.revoke_api_key(key_id, datetime.now(UTC))
    authenticator = console.client._transport.app.state.services.authenticator  # type: ignore[attr-defined]
    authenticator._keys._cache.clear()  # as the cache's few seconds would
    assert (await console.client.get("/console/jobs")).status_code == 401
    assert (await console.client.get("/console/jobs")).status_code == 303  # ended


async def test_job_search_filters_and_pages_with_a_cursor(console: Console):
    records = [
        job(n, type="email" if n % 2 else "sms", correlation_id="order-7" if n % 3 == 0 else None)
        for n in range(120)
    ]
    for record in records:
        await create_job(console.store, record)
    await create_job(console.store, job(200, tenant="other"))  # never shown to this tenant
    await log_in(console.client, console.reader_key)
    ids: list[str] = []
    url = "/console/jobs?type=email"
    pages = 0
    while url:
        page = await console.client.get(url)
        assert page.status_code == 200
        pages += 1
        ids += [r.id for r in records if f"/console/jobs/{r.id}" in page.text]
        next_link = page.text.split('rel="next"')[0].rsplit('href="', 1)
        url = next_link[1].split('"')[0].replace("&amp;", "&") if 'rel="next"' in page.text else ""
    assert pages == 2  # 60 email jobs, 50 a page
    assert sorted(ids) == sorted(r.id for r in records if r.type == "email")

    found = await console.client.get("/console/jobs", params={"correlation_id": "order-7"})
    assert found.text.count('<a href="/console/jobs/') == 40
    window = {"created_from": "2026-03-01T00:10", "created_before": "2026-03-01T00:20"}
    timed = await console.client.get("/console/jobs", params=window)
    shown = [r for r in records if f"/console/jobs/{r.id}" in timed.text]
    assert [r.created_at.minute for r in sorted(shown, key=lambda r: r.id)] == list(range(10, 20))

    one = records[5]
    opened = await console.client.get("/console/jobs", params={"id": one.id})
    assert opened.headers["location"] == f"/console/jobs/{one.id}"
    unknown = await console.client.get("/console/jobs", params={"id": "nope"})
    assert unknown.status_code == 404
    bad = await console.client.get("/console/jobs", params={"created_from": "yesterday"})
    assert bad.status_code == 422


async def test_the_job_page_shows_payload_and_error_redacted_as_the_logs_do(console: Console):
    record = job(
        1,
        status=JobStatus.DEAD,
        payload={"to": "user@example.com", "api_key": "sk-live-123", "note": "password=hunter2"},
        last_error="POST https://bot:s3cret@hooks.example/x failed: token=abc123",
        result=None,
    )
    await create_job(console.store, record)
    await log_in(console.client, console.admin_key)
    page = await console.client.get(f"/console/jobs/{record.id}")
    assert page.status_code == 200
    for secret in ("sk-live-123", "hunter2", "s3cret", "abc123"):
        assert secret not in page.text
    assert "user@example.com" in page.text
    assert "Replay from the dead-letter queue" in page.text  # admin, and the job is dead
    assert (await console.client.get("/console/jobs/unknown")).status_code == 404


async def test_the_job_page_tells_its_life_in_order_with_its_traces(console: Console):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    record = job(
        0,
        attempts=1,
        started_at=start + timedelta(seconds=40),
        finished_at=start + timedelta(seconds=41, milliseconds=250),
        trace_id="0af7651916cd43dd8448eb211c80319c",
        last_error="ConnectionError: token=abc123 refused",
    )
    await create_job(console.store, record)

    def at(seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    first = JobEvent(record.id, at(1), JobEventKind.RETRIED, 1, "ConnectionError: token=abc123")
    first.took_ms, first.delay_ms, first.tier = 350, 1000, "1s"
    dead = JobEvent(record.id, at(3), JobEventKind.DEAD, 2, "Permanent: no such user")
    dead.took_ms, dead.reason = 1500, "permanent"
    # Written by another process, whose step reached the store first: shown by time.
    replayed = JobEvent(record.id, at(30), JobEventKind.REPLAYED, 2, reason="permanent")
    replayed.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await console.store.record_events([replayed, first, dead])
    await log_in(console.client, console.reader_key)
    page = await console.client.get(f"/console/jobs/{record.id}")
    assert page.status_code == 200
    timeline = page.text.split('<ol class="timeline">')[1].split("</ol>")[0]
    said = [
        "Submitted",
        "Attempt 1 failed</strong>: ran 350 ms; retried in 1.0 s through the 1s delay tier",
        "Attempt 2 failed; dead-lettered</strong>: ran 1.5 s; permanent (the handler said",
        "Replayed from the dead-letter queue</strong>: attempts start again at 1",
        "4bf92f3577b34da6a3ce929d0e0e4736",  # the replay's new trace
        "Attempt 1 succeeded</strong>: ran 1.2 s",
    ]
    places = [timeline.index(text) for text in said]
    assert places == sorted(places)
    assert "abc123" not in page.text  # errors redacted as the logs redact them
    assert "2026-03-01 00:00:30 UTC" in timeline
    # The job's own trace is in its fields, not repeated on each step.
    assert page.text.count("0af7651916cd43dd8448eb211c80319c") == 1
