"""``taskctl keys create|list|revoke``: the API keys in the job store; ``new-data-key|rotate-data``: the data keys."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from taskctl.context import Column, JsonFlag, data_sealer, in_store, out, print_json, print_rows
from topology.errors import SettingsError
from topology.names import DEFAULT_TENANT

if TYPE_CHECKING:
    from jobstore.model import ApiKeyRecord
    from producers.auth.principal import Scope

app = typer.Typer(
    name="keys",
    help=(
        "Create, list and revoke API keys; rotate data keys.\n\nThe job store keeps only the"
        " API keys' hashes; rotate-data re-seals stored jobs under the current data key."
    ),
    rich_markup_mode=None,
)


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
    """Create a key and print it, once.

    It is stored hashed and cannot be shown again.
    """
    from producers.auth.api_keys import make_key
    from topology.limits import tenant_problem
    from topology.settings import AuthSettings, read_section

    if not name.strip() or len(name) > 200:
        raise typer.BadParameter("give a name of 1-200 characters", param_hint="NAME")
    if problem := tenant_problem(tenant):
        raise typer.BadParameter(problem, param_hint="--tenant")
    now = datetime.now(UTC)
    new = make_key(
        name=name,
        tenant=tenant,
        scopes=_scopes(scope),
        job_types=_patterns(job_type),
        expires_at=_expiry(expires_in, now),
        pepper=read_section(AuthSettings).api_key_pepper,
        now=now,
    )

    in_store(lambda store: store.create_api_key(new.record))
    if as_json:
        print_json(_view(new.record) | {"key": new.token})
        return
    _print_keys([new.record])
    out().print("the key (shown once; keep it secret):")
    typer.echo(new.token)


@app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """List the keys, none of their secrets.

    Id, name, tenant, scopes, revocation, expiry, last use and job types.
    """
    _print_keys(in_store(lambda store: store.list_api_keys()), as_json=as_json)


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(metavar="ID", help="The key's id.")]) -> None:
    """Revoke a key.

    Running API processes refuse it within TASKQ_API_KEY_CACHE_TTL (5 s by default).
    """
    from topology.settings import AuthSettings, read_section

    record = in_store(lambda store: store.revoke_api_key(key_id, datetime.now(UTC)))
    if record is None:
        raise SettingsError(f"no API key has id {key_id!r}; see taskctl keys list")
    ttl = read_section(AuthSettings).api_key_cache_ttl
    out().print(
        f"revoked {record.id} ({record.name}); running API processes refuse it within {ttl:g} s"
    )


@app.command("new-data-key")
def new_data_key(
    key_id: Annotated[
        str, typer.Argument(metavar="ID", help="The key's id (letters, digits, - _).")
    ],
) -> None:
    """Print a fresh data key as ID:base64key.

    Put it in TASKQ_DATA_KEYS: last on every process first, then first (see docs/security.md).
    """
    from topology.sealing import KEY_ID, new_key

    if not KEY_ID.fullmatch(key_id):
        raise typer.BadParameter("1-32 letters, digits, - or _", param_hint="ID")
    typer.echo(f"{key_id}:{new_key()}")


@app.command("rotate-data")
def rotate_data(
    batch: Annotated[
        int, typer.Option(min=1, max=10000, help="Jobs read and written at once.")
    ] = 500,
) -> None:
    """Re-seal stored payloads and results under the first data key.

    The current key is the first of TASKQ_DATA_KEYS (or its file); the others must still be
    listed to open what they sealed. Clear values are sealed too. Once it reports nothing
    unreadable, an old key may go from the list when no queued message or claim-checked
    payload still needs it (see docs/security.md).
    """
    from jobstore.sealed_jobs import ResealReport, reseal_jobs

    sealer = data_sealer()
    if not sealer.enabled:
        raise SettingsError("TASKQ_DATA_KEYS: no data key is set; nothing to seal with")
    console = out(stderr=True)

    def shown(report: ResealReport) -> None:
        console.print(f"{report.jobs} jobs read, {report.resealed} values re-sealed")

    report = in_store(lambda store: reseal_jobs(store, sealer, batch=batch, progress=shown))
    out().print(
        f"re-sealed {report.resealed} values of {report.jobs} jobs under data key "
        f"{sealer.current}; {report.failed} could not be opened"
    )
    for line in report.unreadable:
        out().print(f"  {line}")
    if report.failed:
        raise typer.Exit(1)


def _scopes(names: list[str] | None) -> "tuple[Scope, ...]":
    from producers.auth.principal import Scope

    try:
        scopes = Scope.parse(" ".join(names or ["jobs:write", "jobs:read"]))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from exc
    if not scopes:
        raise typer.BadParameter("give at least one scope", param_hint="--scope")
    return scopes


def _patterns(patterns: list[str] | None) -> tuple[str, ...] | None:
    from topology.limits import job_type_problem

    for pattern in patterns or ():
        if problem := job_type_problem(pattern, allow_wildcards=True):
            raise typer.BadParameter(problem, param_hint="--job-type")
    return tuple(patterns) if patterns else None


def _expiry(expires_in: str | None, now: datetime) -> datetime | None:
    from topology.durations import parse_timedelta

    try:
        delta = parse_timedelta(expires_in)
        return None if delta is None else now + delta
    except (ValueError, OverflowError) as exc:  # OverflowError: past the year 9999
        raise typer.BadParameter(str(exc), param_hint="--expires-in") from exc


def _view(key: "ApiKeyRecord") -> dict[str, Any]:
    from producers.tenancy import iso

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


def _print_keys(keys: "list[ApiKeyRecord]", *, as_json: bool = False) -> None:
    columns: list[Column] = [
        *("id", "name", "tenant"),
        ("scopes", lambda key: " ".join(key["scopes"])),
        ("revoked", lambda key: key["revoked_at"] or "-"),
        ("expires", lambda key: key["expires_at"] or "never"),
        ("last used", lambda key: key["last_used_at"] or "never"),
        ("job types", lambda key: " ".join(key["job_types"] or ["*all*"])),
    ]
    print_rows([_view(key) for key in keys], columns, whole=1, as_json=as_json)
