"""``taskctl keys create|list|revoke``: the API keys in the job store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from jobstore.credentials import ApiKeyRecord
from jobstore.factory import open_store
from jobstore.model import JobStore
from producers.auth.api_keys import make_key
from producers.auth.scopes import Scope
from producers.auth.settings import AuthSettings
from producers.settings import SubmitSettings
from taskctl.context import fail, out, run
from topology.durations import parse_duration
from topology.errors import SettingsError
from topology.names import DEFAULT_TENANT, job_type_problem, tenant_problem
from topology.settings import load_settings

app = typer.Typer(help="Create, list and revoke API keys (kept hashed in the job store).")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


async def _store() -> JobStore:
    store = open_store(load_settings(SubmitSettings).store_url)
    try:
        await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store


@app.command()
def create(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="What the key is for (shown in listings).")
    ],
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="jobs:write, jobs:read, admin, metrics:read (repeatable)."),
    ] = None,
    tenant: Annotated[str, typer.Option(help="Whose jobs it submits and sees.")] = DEFAULT_TENANT,
    job_type: Annotated[
        list[str] | None,
        typer.Option("--job-type", help="Only job types matching this pattern (repeatable)."),
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Stop working after this long (e.g. 30d, 12h).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a key and print it once: it is stored hashed and cannot be shown again."""
    if not name.strip() or len(name) > 200:
        raise typer.BadParameter("give a name of 1-200 characters", param_hint="NAME")
    if tenant_problem(tenant):
        raise typer.BadParameter(str(tenant_problem(tenant)), param_hint="--tenant")
    now = datetime.now(UTC)
    pepper = load_settings(AuthSettings).api_key_pepper
    new = make_key(
        name=name,
        tenant=tenant,
        scopes=_scopes(scope),
        job_types=_patterns(job_type),
        expires_at=_expiry(expires_in, now),
        pepper=None if pepper is None else pepper.get_secret_value().encode(),
        now=now,
    )

    async def go() -> None:
        store = await _store()
        try:
            await store.create_api_key(new.record)
        finally:
            await store.close()

    run(go())
    if as_json:
        typer.echo(orjson.dumps(_view(new.record) | {"key": new.token}).decode())
        return
    out.print(_table([new.record]))
    out.print("the key (shown once; keep it secret):", highlight=False)
    typer.echo(new.token)


@app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """List the keys: id, name, tenant, scopes, job types, expiry, revocation, last use."""

    async def go() -> list[ApiKeyRecord]:
        store = await _store()
        try:
            return await store.list_api_keys()
        finally:
            await store.close()

    keys = run(go())
    if as_json:
        typer.echo(orjson.dumps([_view(k) for k in keys], option=orjson.OPT_INDENT_2).decode())
        return
    out.print(_table(keys))


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id.")]) -> None:
    """Revoke a key; running API processes refuse it within TASKQ_API_KEY_CACHE_TTL (5 s)."""

    async def go() -> ApiKeyRecord | None:
        store = await _store()
        try:
            return await store.revoke_api_key(key_id, datetime.now(UTC))
        finally:
            await store.close()

    record = run(go())
    if record is None:
        fail(SettingsError(f"no API key has id {key_id!r}; see taskctl keys list"))
    ttl = load_settings(AuthSettings).api_key_cache_ttl
    out.print(
        f"revoked {record.id} ({record.name}); running API processes refuse it within {ttl:g} s",
        highlight=False,
    )


def _scopes(names: list[str] | None) -> tuple[Scope, ...]:
    try:
        scopes = Scope.parse(" ".join(names or ["jobs:write", "jobs:read"]))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from exc
    if not scopes:
        raise typer.BadParameter("give at least one scope", param_hint="--scope")
    return scopes


def _patterns(patterns: list[str] | None) -> tuple[str, ...] | None:
    for pattern in patterns or ():
        problem = job_type_problem(pattern, allow_wildcards=True)
        if problem:
            raise typer.BadParameter(problem, param_hint="--job-type")
    return tuple(patterns) if patterns else None


def _expiry(expires_in: str | None, now: datetime) -> datetime | None:
    if expires_in is None:
        return None
    try:
        return now + timedelta(milliseconds=parse_duration(expires_in))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from exc


def _view(key: ApiKeyRecord) -> dict[str, Any]:
    def iso(when: datetime | None) -> str | None:
        return None if when is None else when.isoformat().replace("+00:00", "Z")

    return {
        "id": key.id,
        "name": key.name,
        "tenant": key.tenant,
        "scopes": list(key.scopes),
        "job_types": None if key.job_types is None else list(key.job_types),
        "created_at": iso(key.created_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
        "last_used_at": iso(key.last_used_at),
    }


def _table(keys: list[ApiKeyRecord]) -> Table:
    table = Table("id", "name", "tenant", "scopes", "job types", "expires", "revoked", "last used")
    for key in map(_view, keys):
        table.add_row(
            key["id"],
            key["name"],
            key["tenant"],
            " ".join(key["scopes"]),
            " ".join(key["job_types"] or ["*all*"]),
            key["expires_at"] or "never",
            key["revoked_at"] or "-",
            key["last_used_at"] or "never",
        )
    return table
