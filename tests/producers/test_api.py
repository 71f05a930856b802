"""Every status code of the job API, against in-memory twins of the broker and the stores."""

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from jobstore.model import JobStatus
from tests.helpers import create_job
from tests.producers.api_harness import Api, make_api
from topology import names
from topology.errors import BlobUnavailableError, BrokerUnavailableError

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def api(topology) -> AsyncIterator[Api]:
    harness = make_api(topology)
    async with harness.client:
        yield harness


async def post(api: Api, body: object, path: str = "/jobs", headers: dict[str, str] | None = None):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await api.client.post(path, content=content, headers={**JSON, **(headers or {})})


def assert_problem(response, status: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    for fragment in fragments:
        assert fragment in response.text, response.text
    return body


async def test_submit_answers_202_with_the_job_and_publishes_it(api: Api):
    response = await post(api, {"type": "email", "payload": {"to": "user@example.com"}})
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued"
    assert job["priority"] == "medium"
    assert response.headers["location"] == f"/jobs/{job['id']}"
    (published,) = api.publisher.queues["taskq.email"]
    assert published.id == job["id"]
    assert published.payload == {"to": "user@example.com"}
    assert published.idempotency_key == job["id"]
    assert (await api.stored(job["id"])).status is JobStatus.QUEUED
    assert api.publisher.events == []  # submission events are opt-in (TASKQ_SUBMIT_EVENTS)


async def test_submission_event_is_published_when_enabled(topology):
    from topology.settings import SubmitSettings

    harness = make_api(topology, submit=SubmitSettings(submit_events=True))
    async with harness.client:
        job = (await post(harness, {"type": "email.welcome"})).json()
    ((key, body),) = harness.publisher.events
    assert key == "email.welcome.queued"
    assert orjson.loads(body)["id"] == job["id"]


async def test_idempotency_key_header_replays_the_original_response(api: Api):
    body = {"type": "email", "payload": {"n": 1}}
    first = await post(api, body, headers={"Idempotency-Key": "order-17"})
    again = await post(api, body, headers={"Idempotency-Key": "order-17"})
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.json() == first.json()
    assert len(api.publisher.published) == 1


async def test_idempotency_key_field_equals_the_header(api: Api):
    first = await post(api, {"type": "email", "idempotency_key": "k-1"})
    again = await post(api, {"type": "email"}, headers={"Idempotency-Key": "k-1"})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


async def test_same_key_with_a_different_body_is_422(api: Api):
    await post(api, {"type": "email", "payload": {"n": 1}}, headers={"Idempotency-Key": "k"})
    response = await post(
        api, {"type": "email", "payload": {"n": 2}}, headers={"Idempotency-Key": "k"}
    )
    assert_problem(response, 422, "different request")


async def test_header_and_field_keys_that_differ_are_422(api: Api):
    response = await post(
        api, {"type": "email", "idempotency_key": "a"}, headers={"Idempotency-Key": "b"}
    )
    assert_problem(response, 422, "idempotency_key")


async def test_duplicate_still_in_flight_is_409(api: Api):
    from jobstore.model import JobRecord
    from producers.submit import JobRequest
    from tests.producers.api_harness import now
    from topology.spec import Priority

    held = JobRequest(type="email", idempotency_key="busy", source="api")
    record = JobRecord("held", "email", JobStatus.QUEUED, Priority.MEDIUM, now(), now())
    await create_job(api.store, record, claim=(held.claim_key(), held.fingerprint()))
    response = await post(api, {"type": "email"}, headers={"Idempotency-Key": "busy"})
    assert_problem(response, 409, "still in progress")


async def test_fifty_concurrent_posts_with_one_key_make_exactly_one_job(api: Api):
    body = {"type": "email", "payload": {"same": True}}
    responses = await asyncio.gather(
        *(post(api, body, headers={"Idempotency-Key": "storm"}) for _ in range(50))
    )
    assert {r.status_code for r in responses} <= {202, 409}
    assert len({r.json()["id"] for r in responses if r.status_code == 202}) == 1
    assert len(api.publisher.published) == 1
    assert len(api.store.jobs) == 1


@pytest.mark.parametrize("key", ["x" * 256, "has space", "tab\tkey", "ünïcode"])
async def test_invalid_idempotency_key_header_is_rejected(api: Api, key: str):
    response = await api.client.post(
        "/jobs",
        content=b'{"type":"email"}',
        headers={**JSON, "Idempotency-Key": key.encode("utf-8")},
    )
    assert response.status_code in (400, 422), response.text
    assert not api.publisher.published


async def test_unknown_job_type_is_422_listing_the_accepted_types(api: Api):
    response = await post(api, {"type": "sms"})
    body = assert_problem(response, 422, "unknown job type 'sms'", "email.*", "github.#")
    assert body["errors"][0]["field"] == "type"
    assert not api.publisher.published


@pytest.mark.parametrize(
    "priority", [-1, 0, 3, 4, 255, 256, 3.5, True, None, "highest", "HIGH", "1e309"]
)
async def test_priority_out_of_range_is_422(api: Api, priority: object):
    response = await post(api, {"type": "email", "priority": priority})
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == "priority"


async def test_every_named_priority_is_accepted_and_sent_as_amqp_priority(api: Api):
    for name, level in [("low", 0), ("medium", 1), ("high", 2), ("urgent", 3)]:
        response = await post(api, {"type": "email", "priority": name})
        assert response.status_code == 202
        assert api.publisher.published[-1].envelope.properties().priority == level


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"delay": -1}, "delay"),
        ({"delay": "10"}, "delay"),
        ({"delay": True}, "delay"),
        ({"delay": 10**9}, "delay"),
        ({"run_at": "tomorrow"}, "run_at"),
        ({"run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({"run_at": "9999-12-31T00:00:00Z"}, "run_at"),
        ({"delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "delay"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 10**6}, "max_attempts"),
        ({"callback_url": "ftp://x"}, "callback_url"),
        ({"type": "x" * 300}, "type"),
        ({"correlation_id": "c" * 300}, "correlation_id"),
    ],
)
async def test_bad_fields_are_422_naming_the_field(api: Api, fields: dict, field: str):
    response = await post(api, {"type": "email", **fields})
    body = assert_problem(response, 422, field)
    assert any(field in e["field"] or field in e["message"] for e in body["errors"])
    assert not api.publisher.published


@pytest.mark.parametrize(
    "owned", ["status", "attempts", "id", "created_at", "result", "payload_ref"]
)
async def test_server_owned_fields_are_refused(api: Api, owned: str):
    response = await post(api, {"type": "email", owned: "x"})
    assert_problem(response, 422, owned, "set by the server")


async def test_unknown_field_is_refused_by_name(api: Api):
    body = assert_problem(await post(api, {"type": "email", "tenant_id": 7}), 422, "tenant_id")
    assert body["errors"][0]["field"] == "tenant_id"


@pytest.mark.parametrize(
    "kind", [None, "text/plain", "multipart/form-data; boundary=x", "application/xml"]
)
async def test_wrong_content_type_is_415(api: Api, kind: str | None):
    headers = {} if kind is None else {"Content-Type": kind}
    response = await api.client.post("/jobs", content=b'{"type":"email"}', headers=headers)
    assert_problem(response, 415, "application/json")


async def test_json_with_charset_is_accepted(api: Api):
    response = await api.client.post(
        "/jobs",
        content=b'{"type":"email"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 202


async def test_declared_body_over_the_limit_is_413_before_reading(api: Api):
    response = await api.client.post(
        "/jobs", content=b"{" + b" " * (70 * 1024) + b"}", headers=JSON
    )
    assert_problem(response, 413, "larger than 65536 bytes")


async def test_streamed_body_over_the_limit_is_413(api: Api):
    async def chunks():
        for _ in range(100):
            yield b" " * 1024

    response = await api.client.post("/jobs", content=chunks(), headers=JSON)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"type": "email"',
        b'{"type": "email"} trailing',
        b"\xff\xfe{}",
        b'\xef\xbb\xbf{"type": "email"}',
        b'{"type": "email", "payload": NaN}',
        b'{"type": "email", "payload": Infinity}',
        b"[]",
        b'"email"',
        b"42",
        b"null",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"type": "email", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
async def test_malformed_bodies_are_4xx_and_never_echoed(api: Api, body: bytes):
    response = await api.client.post("/jobs", content=body, headers=JSON)
    assert response.status_code in (400, 413, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text
    assert len(response.content) < 4096
    assert not api.publisher.published


async def test_broker_down_is_503_with_retry_after_and_nothing_kept(api: Api):
    api.publisher.fail_with = BrokerUnavailableError("connection refused")
    response = await post(api, {"type": "email"}, headers={"Idempotency-Key": "retry-me"})
    assert_problem(response, 503, "retry later")
    assert response.headers["retry-after"] == "5"
    assert api.store.jobs == {}
    # The key was released, so the client's retry goes through once the broker is back.
    api.publisher.fail_with = None
    again = await post(api, {"type": "email"}, headers={"Idempotency-Key": "retry-me"})
    assert again.status_code == 202
    assert "idempotent-replayed" not in again.headers


async def test_large_payload_is_claim_checked_before_publishing(api: Api):
    payload = {"blob": "x" * 4000}
    response = await post(api, {"type": "email", "payload": payload})
    assert response.status_code == 202
    (published,) = api.publisher.queues["taskq.email"]
    assert published.payload is None
    ref = published.payload_ref
    assert ref is not None
    assert orjson.loads(await api.blobs.get(ref)) == payload
    assert response.json()["payload_ref"]["sha256"] == ref.sha256


async def test_blob_store_down_is_503_and_nothing_is_published(api: Api, monkeypatch):
    async def down(*args, **kwargs):
        raise BlobUnavailableError("S3 unreachable")

    monkeypatch.setattr(api.blobs, "put", down)
    response = await post(api, {"type": "email", "payload": {"blob": "x" * 4000}})
    assert_problem(response, 503)
    assert not api.publisher.published


async def test_delayed_job_is_scheduled_through_a_delay_tier(api: Api):
    response = await post(api, {"type": "email", "delay": 5})
    job = response.json()
    assert job["status"] == "scheduled"
    assert job["not_before"] is not None
    (published,) = api.publisher.published
    assert published.queue == "taskq.delay.4s"
    assert published.route.headers[names.DELAY_HEADER] == "4s"


async def test_run_at_in_the_past_runs_now(api: Api):
    response = await post(api, {"type": "email", "run_at": "2020-01-01T00:00:00Z"})
    assert response.json()["status"] == "queued"


async def test_get_returns_the_job_and_404_for_an_unknown_id(api: Api):
    created = (await post(api, {"type": "email"})).json()
    got = await api.client.get(f"/jobs/{created['id']}")
    assert got.status_code == 200
    assert got.json() == created
    assert_problem(await api.client.get("/jobs/nope"), 404, "no job has id 'nope'")


async def test_list_filters_and_pages_newest_first(api: Api):
    ids = [
        (await post(api, {"type": "email" if i % 2 else "job.x"})).json()["id"] for i in range(7)
    ]
    first = (await api.client.get("/jobs", params={"type": "email", "limit": 2})).json()
    assert [j["id"] for j in first["jobs"]] == [ids[5], ids[3]]
    second = (
        await api.client.get(
            "/jobs", params={"type": "email", "limit": 2, "cursor": first["next_cursor"]}
        )
    ).json()
    assert [j["id"] for j in second["jobs"]] == [ids[1]]
    assert second["next_cursor"] is None
    queued = (await api.client.get("/jobs", params={"status": "queued"})).json()
    assert len(queued["jobs"]) == 7


@pytest.mark.parametrize(
    "params", [{"status": "done"}, {"limit": 0}, {"limit": 501}, {"cursor": "c" * 65}]
)
async def test_bad_list_parameters_are_422(api: Api, params: dict):
    assert_problem(await api.client.get("/jobs", params=params), 422)


async def test_cancel_before_start_then_409_once_final(api: Api):
    job = (await post(api, {"type": "email"})).json()
    cancelled = await api.client.delete(f"/jobs/{job['id']}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert_problem(await api.client.delete(f"/jobs/{job['id']}"), 409, "cancelled")
    assert_problem(await api.client.delete("/jobs/unknown"), 404)


async def test_cancel_of_a_running_job_is_409(api: Api):
    job = (await post(api, {"type": "email"})).json()
    await api.services.submitter.settle()  # as the job's worker would have written its row
    await api.store.transition(
        job["id"], JobStatus.RUNNING, allowed_from=frozenset({JobStatus.QUEUED})
    )
    assert_problem(await api.client.delete(f"/jobs/{job['id']}"), 409, "is running")


async def test_batch_reports_each_job_in_order(api: Api):
    response = await post(
        api,
        {"jobs": [{"type": "email"}, {"type": "sms"}, {"type": "job.a", "priority": "urgent"}]},
        path="/jobs/batch",
    )
    assert response.status_code == 207
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == [202, 422, 202]
    assert "unknown job type 'sms'" in body["results"][1]["error"]["detail"]
    assert len(api.publisher.published) == 2


async def test_batch_over_the_limit_or_empty_is_422(topology):
    from topology.settings import SubmitSettings

    harness = make_api(topology, submit=SubmitSettings(batch_max=3))
    async with harness.client:
        too_many = await post(harness, {"jobs": [{"type": "email"}] * 4}, path="/jobs/batch")
        assert_problem(too_many, 422, "at most 3 jobs")
        assert_problem(await post(harness, {"jobs": []}, path="/jobs/batch"), 422, "jobs")
    assert not harness.publisher.published


async def test_health_readiness_and_metrics(api: Api):
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).status_code == 200

    async def down() -> None:
        raise BrokerUnavailableError("reconnecting")

    api.services.ready = down
    assert_problem(await api.client.get("/readyz"), 503, "reconnecting")
    await post(api, {"type": "email.welcome", "priority": "high"})
    metrics = (await api.client.get("/metrics")).text
    assert 'taskq_api_requests_total{method="GET",route="/readyz",status="503"} 1.0' in metrics
    assert 'taskq_jobs_submitted_total{group="email",priority="high"} 1.0' in metrics


async def test_random_job_types_add_no_metric_label_values(api: Api):
    await post(api, {"type": "sms.first"})
    await api.client.get("/metrics")  # the first scrape adds its own series
    before = (await api.client.get("/metrics")).text.count("\n")
    for i in range(200):
        await post(api, {"type": f"random.{i}"})
    after = (await api.client.get("/metrics")).text
    assert after.count("\n") == before
    assert "random" not in after


async def test_openapi_documents_the_job_routes(api: Api):
    schema = (await api.client.get("/openapi.json")).json()
    assert {"/jobs", "/jobs/{job_id}", "/jobs/batch", "/healthz", "/readyz", "/metrics"} <= set(
        schema["paths"]
    )
    assert "JobSubmission" in schema["components"]["schemas"]
