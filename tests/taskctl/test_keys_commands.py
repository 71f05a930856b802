"""``taskctl keys`` and the admin key of ``taskctl up``, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from jobstore.model import open_store
from producers.auth.api_keys import parse
from taskctl.admin_key import ensure_admin_key
from taskctl.cli import app
from tests.conftest import scratch_database
from tests.helpers import table_rows
from topology.settings import AuthSettings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.sqlite3"
        return
    async with scratch_database(request.getfixturevalue("postgres_url")) as dsn:
        yield dsn


async def taskctl(store_url: str, *args: str):
    env = {"TASKQ_STORE_URL": store_url, "COLUMNS": "300"}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_a_key_is_shown_once_listed_without_its_secret_and_revoked(store_url: str) -> None:
    made = await taskctl(
        store_url,
        "keys",
        "create",
        "ci",
        "--scope",
        "jobs:read",
        "--scope",
        "admin",
        "--tenant",
        "acme",
        "--job-type",
        "email.*",
        "--expires-in",
        "30d",
        "--json",
    )
    assert made.exit_code == 0, made.output
    created = orjson.loads(made.output)
    key_id, secret = parse(created["key"]) or ("", "")
    assert created["id"] == key_id
    assert (created["tenant"], created["scopes"], created["job_types"]) == (
        "acme",
        ["jobs:read", "admin"],
        ["email.*"],
    )
    listed = await taskctl(store_url, "keys", "list", "--json")
    assert secret not in listed.output
    (row,) = orjson.loads(listed.output)
    assert row["id"] == key_id
    assert row["revoked_at"] is None
    assert row["expires_at"]
    revoked = await taskctl(store_url, "keys", "revoke", key_id)
    assert revoked.exit_code == 0
    assert orjson.loads((await taskctl(store_url, "keys", "list", "--json")).output)[0][
        "revoked_at"
    ]
    unknown = await taskctl(store_url, "keys", "revoke", "0000000000000000")
    assert unknown.exit_code == 1
    assert "no API key has id '0000000000000000'" in unknown.output


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--scope", "root"], "unknown scope 'root'"),
        (["--job-type", "email..x"], "each dot-separated word"),
        (["--tenant", "../acme"], "tenant '../acme' must be"),
        (["--expires-in", "soon"], "--expires-in"),
        (["--expires-in", "99999999999d"], "too long a duration"),
        (["--expires-in", "3000000d"], "--expires-in"),
    ],
)
async def test_bad_key_options_are_refused(store_url: str, args: list[str], complaint: str) -> None:
    refused = await taskctl(store_url, "keys", "create", "bad", *args)
    assert refused.exit_code == 2
    assert complaint in refused.output
    assert orjson.loads((await taskctl(store_url, "keys", "list", "--json")).output) == []


async def test_the_admin_key_file_is_made_once_private_and_remade_for_a_new_store(
    store_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "data" / "admin.key"
    store = open_store(store_url)
    await store.migrate()
    try:
        assert await ensure_admin_key(store, path, AuthSettings())
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
        token = path.read_text().strip()
        key_id = (parse(token) or ("", ""))[0]
        record = await store.get_api_key(key_id)
        assert record is not None
        assert set(record.scopes) == {
            "jobs:write",
            "jobs:read",
            "admin",
            "metrics:read",
        }
        assert not await ensure_admin_key(store, path, AuthSettings())  # the second start keeps it
        assert path.read_text().strip() == token
    finally:
        await store.close()
    fresh = open_store(f"sqlite:///{tmp_path}/other.sqlite3")
    await fresh.migrate()
    try:
        assert await ensure_admin_key(fresh, path, AuthSettings())  # a store that never saw the key
        assert path.read_text().strip() != token
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        await fresh.close()
    assert os.listdir(path.parent) == ["admin.key"]  # no partial file left behind


async def test_in_80_columns_the_key_list_prints_every_id_whole(store_url: str) -> None:
    made = [
        orjson.loads((await taskctl(store_url, "keys", "create", name, "--json")).output)["id"]
        for name in ("a service with a rather long descriptive name", "ci")
    ]
    env = {"TASKQ_STORE_URL": store_url, "COLUMNS": "80"}
    listed = await asyncio.to_thread(CliRunner().invoke, app, ["keys", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    assert sorted(row["id"] for row in table_rows(listed.stdout)) == sorted(made)
