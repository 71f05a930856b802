"""Without a valid credential no door opens: submit, read, list, cancel, DLQ, metrics.

Each credential an attacker might try (none, another scheme, a made-up key, a real key's id
with a wrong secret, garbage, a real key in the query string) gets 401 with
``WWW-Authenticate: Bearer`` on every route, and nothing is published, stored or lost.
"""

from __future__ import annotations

import pytest

from producers.auth.api_keys import parse
from tests.security.conftest import Door

pytestmark = pytest.mark.rabbitmq


def _doors(job_id: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("POST", "/jobs", {"type": "email", "payload": {"to": "x@example.com"}}),
        ("POST", "/jobs/batch", {"jobs": [{"type": "email"}]}),
        ("GET", f"/jobs/{job_id}", None),
        ("GET", "/jobs", None),
        ("DELETE", f"/jobs/{job_id}", None),
        ("GET", "/admin/dlq/email", None),
        ("POST", "/admin/dlq/email/replay", {"all": True}),
        ("POST", "/admin/dlq/email/purge", {"confirm": True}),
        ("GET", "/metrics", None),
        ("GET", "/no/such/route", None),
    ]


def _wrong_secret(valid: str) -> str:
    key_id, secret = parse(valid) or ("", "")
    flipped = ("A" if secret[0] != "A" else "B") + secret[1:]
    return f"tq_{key_id}_{flipped}"


ATTEMPTS = {
    "no credential": lambda valid: {},
    "basic scheme": lambda valid: {"Authorization": "Basic dXNlcjpwYXNz"},
    "empty bearer": lambda valid: {"Authorization": "Bearer "},
    "unknown key": lambda valid: {"Authorization": "Bearer tq_0123456789abcdef_" + "x" * 43},
    "wrong secret": lambda valid: {"Authorization": f"Bearer {_wrong_secret(valid)}"},
    "garbage": lambda valid: {"Authorization": "Bearer not-a-key-or-token"},
    "key in the query string": lambda valid: {},  # sent as ?access_token= below
}


@pytest.mark.parametrize("attempt", ATTEMPTS)
async def test_every_door_answers_401_and_nothing_changes(door: Door, attempt: str) -> None:
    valid = await door.key()
    async with door.client(valid) as owner:
        held = (await owner.post("/jobs", json={"type": "email", "delay": 600})).json()["id"]
    dead_id = await door.dead_letter()
    before = await door.snapshot()
    # The held job waits in a delay tier, the dead one in the DLQ.
    assert before[0]["taskq.email.dlq"] == 1
    assert sum(before[0].values()) == 2
    assert len(before[1]) == 2
    headers = ATTEMPTS[attempt](valid)
    params = {"access_token": valid} if attempt == "key in the query string" else None
    async with door.client(**headers) as stranger:
        for method, path, body in _doors(held):
            answer = await stranger.request(method, path, json=body, params=params)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["www-authenticate"].startswith('Bearer realm="taskq"')
            assert valid not in answer.text
    # Nothing published, stored, cancelled, replayed or purged.
    assert await door.snapshot() == before
    statuses = {job.id: job.status.value for job in before[1]}
    assert statuses == {held: "scheduled", dead_id: "dead"}


async def test_a_bad_token_says_why_in_the_bearer_challenge(door: Door) -> None:
    async with door.client() as nobody:
        missing = await nobody.get("/jobs")
    async with door.client("tq_0123456789abcdef_" + "x" * 43) as stranger:
        wrong = await stranger.get("/jobs")
    # No credential: the bare challenge (RFC 6750 section 3.1); a bad one: invalid_token.
    assert missing.headers["www-authenticate"] == 'Bearer realm="taskq"'
    assert wrong.headers["www-authenticate"] == (
        'Bearer realm="taskq", error="invalid_token", error_description="unknown or wrong API key"'
    )
    assert wrong.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "unknown or wrong API key",
    }


async def test_health_probes_and_the_schema_stay_open(door: Door) -> None:
    async with door.client() as nobody:
        assert (await nobody.get("/healthz")).status_code == 200
        assert (await nobody.get("/readyz")).status_code == 200
        schema = await nobody.get("/openapi.json")
        assert schema.status_code == 200
        assert schema.json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        docs = await nobody.get("/docs")
        assert docs.status_code == 200
