"""A credential opens only the doors its scopes name, and only for the job types it may touch."""

from __future__ import annotations

import pytest

from producers.auth.principal import Scope
from tests.security.conftest import Door

pytestmark = pytest.mark.rabbitmq

# One request per secured operation of the OpenAPI document ({id} is a real job's id).
EXAMPLES: dict[tuple[str, str], tuple[str, dict | None]] = {
    ("post", "/jobs"): ("/jobs", {"type": "email"}),
    ("post", "/jobs/batch"): ("/jobs/batch", {"jobs": [{"type": "email"}]}),
    ("get", "/jobs"): ("/jobs", None),
    ("get", "/jobs/{job_id}"): ("/jobs/{id}", None),
    ("delete", "/jobs/{job_id}"): ("/jobs/{id}", None),
    ("get", "/admin/dlq/{group}"): ("/admin/dlq/email", None),
    ("post", "/admin/dlq/{group}/replay"): ("/admin/dlq/email/replay", {"all": True}),
    ("post", "/admin/dlq/{group}/purge"): ("/admin/dlq/email/purge", {"confirm": True}),
    ("get", "/metrics"): ("/metrics", None),
    ("post", "/workflows"): ("/workflows", {"kind": "group", "steps": [{"type": "email"}]}),
    ("get", "/workflows"): ("/workflows", None),
    ("get", "/workflows/{workflow_id}"): ("/workflows/{id}", None),
    ("delete", "/workflows/{workflow_id}"): ("/workflows/{id}", None),
    ("get", "/schedules"): ("/schedules", None),
    ("post", "/schedules/{name}/pause"): ("/schedules/nightly/pause", {}),
    ("post", "/schedules/{name}/resume"): ("/schedules/nightly/resume", {}),
}


def secured_operations(door: Door) -> dict[tuple[str, str], Scope]:
    found = {}
    for path, operations in door.app.openapi()["paths"].items():
        for method, operation in operations.items():
            for requirement in operation.get("security", ()):
                (scope,) = requirement["bearer"]
                found[(method, path)] = Scope(scope)
    return found


async def test_each_door_refuses_a_credential_without_its_scope(door: Door) -> None:
    doors = secured_operations(door)
    assert set(doors) == set(EXAMPLES), "every secured operation needs an example here"
    full = await door.key()
    async with door.client(full) as owner:
        held = (await owner.post("/jobs", json={"type": "email", "delay": 600})).json()["id"]
    await door.dead_letter()
    before = await door.snapshot()
    for (method, template), needed in doors.items():
        others = tuple(s for s in Scope if s is not needed)
        path, body = EXAMPLES[(method, template)]
        async with door.client(await door.key(scopes=others)) as lacking:
            answer = await lacking.request(method, path.format(id=held), json=body)
        assert answer.status_code == 403, (method, template, answer.text)
        assert answer.json()["detail"] == f"this credential lacks the {needed.value} scope"
        assert answer.headers["www-authenticate"] == (
            f'Bearer realm="taskq", error="insufficient_scope", scope="{needed.value}"'
        )
    assert await door.snapshot() == before


async def test_scopes_of_the_routes_are_the_documented_ones(door: Door) -> None:
    assert secured_operations(door) == {
        ("post", "/jobs"): Scope.JOBS_WRITE,
        ("post", "/jobs/batch"): Scope.JOBS_WRITE,
        ("delete", "/jobs/{job_id}"): Scope.JOBS_WRITE,
        ("get", "/jobs"): Scope.JOBS_READ,
        ("get", "/jobs/{job_id}"): Scope.JOBS_READ,
        ("get", "/admin/dlq/{group}"): Scope.ADMIN,
        ("post", "/admin/dlq/{group}/replay"): Scope.ADMIN,
        ("post", "/admin/dlq/{group}/purge"): Scope.ADMIN,
        ("get", "/metrics"): Scope.METRICS_READ,
        ("post", "/workflows"): Scope.JOBS_WRITE,
        ("delete", "/workflows/{workflow_id}"): Scope.JOBS_WRITE,
        ("get", "/workflows"): Scope.JOBS_READ,
        ("get", "/workflows/{workflow_id}"): Scope.JOBS_READ,
        ("get", "/schedules"): Scope.JOBS_READ,
        ("post", "/schedules/{name}/pause"): Scope.ADMIN,
        ("post", "/schedules/{name}/resume"): Scope.ADMIN,
    }


async def test_a_key_limited_to_job_types_submits_and_sees_only_those(door: Door) -> None:
    limited = await door.key(job_types=("email.*",))
    async with door.client(await door.key()) as owner:
        other = (await owner.post("/jobs", json={"type": "job.x", "delay": 600})).json()
    async with door.client(limited) as mailer:
        before = await door.snapshot()
        refused = await mailer.post("/jobs", json={"type": "job.y"})
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            "this credential may only submit job types matching email.*"
        )
        assert await door.snapshot() == before  # nothing published or stored
        accepted = await mailer.post("/jobs", json={"type": "email.welcome", "delay": 600})
        assert accepted.status_code == 202
        batch = await mailer.post(
            "/jobs/batch", json={"jobs": [{"type": "job.z"}, {"type": "email.bye", "delay": 600}]}
        )
        assert [r["status"] for r in batch.json()["results"]] == [403, 202]
        # The other type's job is as invisible as an unknown one.
        unknown = await mailer.get("/jobs/no-such-job")
        hidden = await mailer.get(f"/jobs/{other['id']}")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["detail"] == f"no job has id {other['id']!r}"
        cancelled = await mailer.delete(f"/jobs/{other['id']}")
        assert cancelled.status_code == 404
        listed = (await mailer.get("/jobs")).json()["jobs"]
        assert sorted(job["type"] for job in listed) == ["email.bye", "email.welcome"]
        assert (await mailer.get("/jobs", params={"type": "job.x"})).json()["jobs"] == []
    jobs = {job.id: job for job in await door.stored()}
    assert jobs[other["id"]].status.value == "scheduled"
    assert sorted(job.type for job in jobs.values()) == ["email.bye", "email.welcome", "job.x"]
