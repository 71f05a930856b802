"""Reserved job types: no client door submits ``taskq.*`` or a webhook source's types.

A ``POST /jobs`` of ``taskq.callback`` made the worker send a correctly signed callback to any
URL, and one of ``github.push`` skipped the signature check; both now answer 403 and leave
nothing behind, while the verified webhook receiver still makes its own types.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from producers.client import AsyncClient, SyncClient
from producers.submit import JobRequest
from tests.security.stack import GITHUB_SECRET, Stack
from tests.webhooks.signing import sign_github
from topology.errors import ReservedJobTypeError
from topology.reserved import TASKQ, webhook_producer

pytestmark = pytest.mark.rabbitmq

TASKQ_WHY = (
    "only taskq itself produces taskq.* types (a job's callback is enqueued when the job "
    "ends, and goes to that job's own callback_url)"
)


def github_why(source: str = "github") -> str:
    return (
        f"only the webhook source {source!r} produces these types, once a delivery's signature "
        f"is verified (POST /webhooks/{source})"
    )


def refusal(job_type: str, why: str) -> str:
    return f"job type {job_type!r} is reserved: {why}; submit a type of your own"


CALLBACK_PAYLOAD = {
    "url": "http://127.0.0.1:9/steal",
    "event": "job.succeeded",
    "job": {"id": "01JOBOFSOMEONEELSE"},
}


@pytest.mark.parametrize(
    ("job_type", "why"),
    [
        ("taskq.callback", TASKQ_WHY),
        ("taskq.anything", TASKQ_WHY),  # reserved before it is even looked up
        ("github.push", github_why()),
        ("github", github_why()),
        ("webhook.invoice.paid", github_why("standard")),
        ("acme.order", github_why("acme")),
    ],
)
async def test_post_jobs_refuses_a_reserved_type_with_403(
    api_stack: Stack, job_type: str, why: str
):
    answer = await api_stack.client.post(
        "/jobs",
        json={"type": job_type, "payload": CALLBACK_PAYLOAD},
        headers={"Idempotency-Key": "reserved-1"},
    )
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    detail = refusal(job_type, why)
    assert answer.json() == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": detail,
        "errors": [{"field": "type", "message": detail}],
    }
    assert await api_stack.messages() == 0
    assert await api_stack.jobs() == []
    # The key was never claimed: the same key serves a real job afterwards.
    again = await api_stack.client.post(
        "/jobs", json={"type": "work.a"}, headers={"Idempotency-Key": "reserved-1"}
    )
    assert again.status_code == 202, again.text


async def test_a_batch_refuses_its_reserved_items_and_keeps_the_rest(api_stack: Stack):
    answer = await api_stack.client.post(
        "/jobs/batch",
        json={
            "jobs": [
                {"type": "taskq.callback", "payload": CALLBACK_PAYLOAD},
                {"type": "work.a", "payload": {"n": 1}},
                {"type": "github.push", "payload": {"forged": True}},
            ]
        },
    )
    assert answer.status_code == 207
    body = answer.json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    first, second, third = body["results"]
    assert first["status"] == 403
    assert first["error"]["detail"] == refusal("taskq.callback", TASKQ_WHY)
    assert third["error"]["detail"] == refusal("github.push", github_why())
    assert second["status"] == 202
    jobs = await api_stack.jobs()
    assert [job.type for job in jobs] == ["work.a"]
    assert await api_stack.occupied() == {"taskq.work": 1}


async def test_the_python_clients_refuse_a_reserved_type(api_stack: Stack):
    client = await AsyncClient.connect(api_stack.env)
    try:
        with pytest.raises(ReservedJobTypeError) as refused:
            await client.submit("taskq.callback", CALLBACK_PAYLOAD)
        assert str(refused.value) == refusal("taskq.callback", TASKQ_WHY)
        [outcome] = await client.submit_many([JobRequest(type="github.push")])
        assert isinstance(outcome, ReservedJobTypeError)
    finally:
        await client.close()

    def sync_submit() -> None:
        with SyncClient(api_stack.env) as sync, pytest.raises(ReservedJobTypeError):
            sync.submit("acme.order", {"forged": True})

    await asyncio.to_thread(sync_submit)
    assert await api_stack.messages() == 0
    assert await api_stack.jobs() == []


async def test_an_internal_producer_makes_only_its_own_reserved_types(api_stack: Stack):
    submitter = api_stack.submitter
    with pytest.raises(ReservedJobTypeError):
        await submitter.submit_reserved(JobRequest(type="github.push"), producer=TASKQ)
    with pytest.raises(ReservedJobTypeError):
        await submitter.submit_reserved(
            JobRequest(type="taskq.callback"), producer=webhook_producer("github")
        )
    assert await api_stack.messages() == 0
    assert await api_stack.jobs() == []


async def test_the_verified_receiver_still_makes_its_reserved_type(api_stack: Stack):
    body = orjson.dumps({"ref": "refs/heads/main"})
    answer = await api_stack.client.post(
        "/webhooks/github",
        content=body,
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "d-1",
            "X-Hub-Signature-256": sign_github(GITHUB_SECRET.encode(), body),
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 202, answer.text
    assert [job.type for job in await api_stack.jobs()] == ["github.push"]
    assert await api_stack.occupied() == {"taskq.github": 1}
