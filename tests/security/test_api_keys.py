"""API keys: stored hashed, an unknown key costs what a wrong one does, revocation and expiry hold."""

from __future__ import annotations

import asyncio
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobstore.model import CredentialStore
from producers.auth import api_keys
from producers.auth.api_keys import ApiKeyVerifier, make_key, parse
from producers.auth.principal import Scope
from taskctl.cli import app as taskctl
from tests.helpers import eventually
from tests.security.conftest import Door, Opener
from topology.errors import AuthenticationError

pytestmark = pytest.mark.rabbitmq


class CountingStore:
    """The door's store, counting the key lookups made through it."""

    def __init__(self, inner: CredentialStore) -> None:
        self.inner = inner
        self.lookups: list[str] = []

    async def get_api_key(self, key_id: str):  # type: ignore[no-untyped-def]
        self.lookups.append(key_id)
        return await self.inner.get_api_key(key_id)

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        await self.inner.touch_api_key(key_id, at)


async def test_an_unknown_key_and_a_wrong_secret_take_the_same_path(
    door: Door, monkeypatch: pytest.MonkeyPatch
) -> None:
    valid = await door.key()
    key_id, secret = parse(valid) or ("", "")
    wrong = f"tq_{key_id}_{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    unknown = f"tq_{'0' * 16}_{secret}"
    store = CountingStore(door.store)
    verifier = ApiKeyVerifier(store, cache_ttl=60)  # type: ignore[arg-type]
    await verifier.verify(valid)  # cached from now on: a wrong secret must not find the cache
    compared: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", spy)
    outcomes = []
    for token in (unknown, wrong):
        store.lookups.clear()
        compared.clear()
        with pytest.raises(AuthenticationError) as refused:
            await verifier.verify(token)
        outcomes.append((str(refused.value), len(store.lookups), list(compared)))
    # The same message, one store lookup by id and one constant-time comparison of 32-byte
    # digests either way: nothing tells an unknown key id from a known one.
    assert outcomes[0] == outcomes[1] == ("unknown or wrong API key", 1, [(32, 32)])


async def test_the_store_keeps_only_a_keyed_hash(door: Door) -> None:
    token = await door.key()
    key_id, secret = parse(token) or ("", "")
    record = await door.store.get_api_key(key_id)
    assert record is not None
    assert secret.encode() not in record.secret_hash
    assert len(record.secret_hash) == 32
    url = door.env["TASKQ_STORE_URL"]
    if url.startswith("sqlite:///"):
        await door.store.ping()
        raw = b"".join(p.read_bytes() for p in Path(url[10:]).parent.glob("jobs.sqlite3*"))
        assert secret.encode() not in raw


async def test_a_revoked_key_is_refused_within_the_cache_ttl(open_door: Opener) -> None:
    async with open_door({"TASKQ_API_KEY_CACHE_TTL": "1"}) as door:
        token = await door.key()
        key_id = (parse(token) or ("", ""))[0]
        async with door.client(token) as holder:
            assert (await holder.get("/jobs")).status_code == 200  # verified and cached
            revoked = await asyncio.to_thread(
                CliRunner().invoke,
                taskctl,
                ["keys", "revoke", key_id],
                env={"TASKQ_STORE_URL": door.env["TASKQ_STORE_URL"]},
            )
            assert revoked.exit_code == 0, revoked.output
            assert "running API processes refuse it within 5 s" in revoked.output

            async def refused() -> bool:
                return (await holder.get("/jobs")).status_code == 401

            await eventually(refused, within=3)  # the TTL (1 s) and some slack
            before = await door.snapshot()
            answer = await holder.post("/jobs", json={"type": "email"})
            assert answer.status_code == 401
            assert answer.json()["detail"] == "the API key was revoked or has expired"
            assert await door.snapshot() == before
        record = await door.store.get_api_key(key_id)
        assert record is not None
        assert record.revoked_at is not None


async def test_an_expired_key_is_refused(door: Door) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    key = make_key(name="old", tenant="default", scopes=tuple(Scope), expires_at=past)
    await door.store.create_api_key(key.record)
    before = await door.snapshot()
    async with door.client(key.token) as holder:
        answer = await holder.post("/jobs", json={"type": "email"})
    assert answer.status_code == 401
    assert answer.json()["detail"] == "the API key was revoked or has expired"
    assert await door.snapshot() == before


async def test_the_pepper_keys_the_hash(open_door: Opener) -> None:
    async with open_door({"TASKQ_API_KEY_PEPPER": "pepper-one"}) as door:
        made = await asyncio.to_thread(
            CliRunner().invoke,
            taskctl,
            ["keys", "create", "ci", "--scope", "jobs:read", "--json"],
            env={
                "TASKQ_STORE_URL": door.env["TASKQ_STORE_URL"],
                "TASKQ_API_KEY_PEPPER": "pepper-one",
            },
        )
        assert made.exit_code == 0, made.output
        peppered = json.loads(made.stdout)["key"]
        unpeppered = await door.key()  # hashed without the pepper
        async with door.client(peppered) as good, door.client(unpeppered) as stale:
            assert (await good.get("/jobs")).status_code == 200
            assert (await stale.get("/jobs")).status_code == 401


async def test_last_use_is_recorded(door: Door) -> None:
    token = await door.key()
    key_id = (parse(token) or ("", ""))[0]
    assert (await door.store.get_api_key(key_id)).last_used_at is None  # type: ignore[union-attr]
    async with door.client(token) as holder:
        assert (await holder.get("/jobs")).status_code == 200
    record = await door.store.get_api_key(key_id)
    assert record is not None
    assert record.last_used_at is not None
