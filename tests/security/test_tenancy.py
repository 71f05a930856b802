"""A credential never sees, lists, cancels, replays or purges another tenant's jobs.

Another tenant's job id answers exactly as an unknown id does (404, the same problem), so
ids cannot be probed either.
"""

from __future__ import annotations

import pytest

from producers.client import AsyncClient
from tests.security.conftest import Door
from topology.envelope import new_job_id
from topology.errors import JobNotFoundError

pytestmark = pytest.mark.rabbitmq


async def test_another_tenants_job_is_an_unknown_job(door: Door) -> None:
    async with door.client(await door.key(tenant="acme")) as acme:
        mine = (await acme.post("/jobs", json={"type": "email", "delay": 600})).json()
        assert mine["tenant"] == "acme"
    before = await door.snapshot()
    unknown = new_job_id()  # an id shaped like a real one
    async with door.client(await door.key(tenant="globex")) as globex:
        probes = {
            "get": (await globex.get(f"/jobs/{mine['id']}"), await globex.get(f"/jobs/{unknown}")),
            "cancel": (
                await globex.delete(f"/jobs/{mine['id']}"),
                await globex.delete(f"/jobs/{unknown}"),
            ),
        }
        listed = await globex.get("/jobs")
        by_type = await globex.get("/jobs", params={"type": "email", "status": "scheduled"})
    for name, (theirs, nobodys) in probes.items():
        assert theirs.status_code == nobodys.status_code == 404, name
        assert theirs.json() == {
            **nobodys.json(),
            "detail": nobodys.json()["detail"].replace(unknown, mine["id"]),
        }, name
        assert set(theirs.headers) == set(nobodys.headers), name
    assert listed.json() == {"jobs": [], "next_cursor": None}
    assert by_type.json() == {"jobs": [], "next_cursor": None}
    assert await door.snapshot() == before  # still scheduled, nothing published


async def test_the_dlq_routes_touch_only_the_callers_tenants_letters(door: Door) -> None:
    theirs = await door.dead_letter(tenant="acme")
    before = await door.snapshot()
    async with door.client(await door.key(tenant="globex")) as globex:
        assert (await globex.get("/admin/dlq/email")).json() == {"letters": [], "next_cursor": None}
        replayed = await globex.post("/admin/dlq/email/replay", json={"all": True})
        assert replayed.json() == {"replayed": 0, "left": 1}
        purged = await globex.post("/admin/dlq/email/purge", json={"confirm": True})
        assert purged.json() == {"purged": 0, "left": 1}
        named = await globex.post("/admin/dlq/email/replay", json={"id": theirs})
        assert named.json() == {"replayed": 0, "left": 1}
    assert await door.snapshot() == before  # still dead, still in the DLQ
    async with door.client(await door.key(tenant="acme")) as acme:
        listed = (await acme.get("/admin/dlq/email")).json()["letters"]
        assert [row["id"] for row in listed] == [theirs]


async def test_the_same_idempotency_key_in_two_tenants_makes_two_jobs(door: Door) -> None:
    key = {"Idempotency-Key": "order-42"}
    async with door.client(await door.key(tenant="acme")) as acme:
        first = await acme.post("/jobs", json={"type": "email", "delay": 600}, headers=key)
    async with door.client(await door.key(tenant="globex")) as globex:
        # A different body under the same key: another tenant's key space, so no 422.
        other = await globex.post("/jobs", json={"type": "job.x", "delay": 600}, headers=key)
    assert first.status_code == other.status_code == 202
    assert "idempotent-replayed" not in other.headers
    assert first.json()["id"] != other.json()["id"]
    async with door.client(await door.key(tenant="acme")) as acme:
        again = await acme.post("/jobs", json={"type": "email", "delay": 600}, headers=key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    tenants = sorted((job.tenant, job.type) for job in await door.stored())
    assert tenants == [("acme", "email"), ("globex", "job.x")]


async def test_the_python_client_and_taskctl_see_only_their_tenant(door: Door) -> None:
    async with door.client(await door.key(tenant="acme")) as acme:
        theirs = (await acme.post("/jobs", json={"type": "email", "delay": 600})).json()
    env = {**door.env, "TASKQ_TENANT": "globex"}
    async with await AsyncClient.connect(env) as client:
        with pytest.raises(JobNotFoundError):
            await client.status(theirs["id"])
        with pytest.raises(JobNotFoundError):
            await client.cancel(theirs["id"])
        assert (await client.list())["jobs"] == []
        mine = await client.submit("email", delay=600)
    assert mine["tenant"] == "globex"
    stored = {job.id: job for job in await door.stored()}
    assert stored[theirs["id"]].status.value == "scheduled"
