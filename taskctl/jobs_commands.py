"""``taskctl submit|status|watch|jobs|cancel|callback-secret``: the job API's work from a terminal."""

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from jobstore.model import JobStatus
from taskctl import context
from topology.errors import JobStateError, SettingsError
from topology.names import Priority

if TYPE_CHECKING:
    from jobstore.model import JobRecord, JobStore

app = typer.Typer(rich_markup_mode=None)
JobId = Annotated[str, typer.Argument(metavar="ID", help="The job's id.")]
# What a single job shows, in this order, when set; each labelled "created", "max attempts".
_FIELDS = (
    *("id", "status", "type", "priority", "attempts", "max_attempts", "created_at", "updated_at"),
    *("not_before", "started_at", "finished_at", "idempotency_key", "correlation_id"),
    *("callback_url", "tenant", "last_error", "result", "payload_ref"),
)


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        context.print_json(job)
        return
    # Plain lines, label then value: nothing to cut, and the terminal wraps a long value.
    for key in _FIELDS:
        value = job.get(key)
        if value is not None:
            label = key.removesuffix("_at").removesuffix("_ref").replace("_", " ")
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            typer.echo(f"{label:<17}{text}".replace("\n", "\n" + " " * 17))


@app.command()
def submit(
    job_type: Annotated[
        str, typer.Argument(metavar="TYPE", help="A job type the topology routes.")
    ],
    payload: Annotated[str, typer.Option(help="The payload as JSON, or @file.json.")] = "null",
    priority: Annotated[
        Priority, typer.Option(help="urgent, high, medium or low.")
    ] = Priority.MEDIUM,
    delay: Annotated[
        float | None, typer.Option(min=0, help="Seconds to wait before running.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Submit at most once per key.")
    ] = None,
    as_json: context.JsonFlag = False,
) -> None:
    """Submit a job and print it once the broker confirmed it."""
    from producers.client import AsyncClient

    raw = Path(payload[1:]).read_bytes() if payload.startswith("@") else payload.encode()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"--payload is not JSON: {exc}") from exc

    async def go() -> dict[str, Any]:
        async with await AsyncClient.connect() as client:
            return await client.submit(
                job_type, data, priority=priority, delay=delay, idempotency_key=idempotency_key
            )

    _print_job(context.run(go()), as_json)


@app.command()
def status(job_id: JobId, as_json: context.JsonFlag = False) -> None:
    """Print a job: status, attempts, times, error, result."""
    from producers.tenancy import get_visible, job_view

    job = context.in_store(lambda store: get_visible(store, context.client_viewer(), job_id))
    _print_job(job_view(_opened(job)), as_json)


@app.command()
def watch(
    job_id: JobId,
    timeout: Annotated[
        float, typer.Option(min=0, help="Give up after this many seconds (0 = never).")
    ] = 0,
) -> None:
    """Follow a job live until it reaches a final state.

    Exits 0 if the job succeeded, 1 if it ended otherwise.
    """
    import asyncio

    from producers.events import decode_event
    from producers.tenancy import get_visible, job_view
    from topology.broker import connect

    broker, topology, viewer = (
        context.broker_settings(),
        context.compiled_topology(None),
        context.client_viewer(),
    )

    async def follow(store: "JobStore") -> str:
        async def current() -> dict[str, Any]:
            return job_view(_opened(await get_visible(store, viewer, job_id)))

        job = await current()
        async with await connect(broker, name=f"taskctl watch {job_id}") as connection:
            channel = await connection.channel()
            # Bind before reading the status again, so no change can slip between the two.
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            exchange = await channel.get_exchange(topology.events_exchange, ensure=False)
            await queue.bind(exchange, f"{job['type']}.*")
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

            async def on_message(message: Any) -> None:
                event = decode_event(message.body)
                if event is not None and event.get("id") == job_id:
                    await events.put(event)

            await queue.consume(on_message, no_ack=True)
            view = await current()
            async with asyncio.timeout(timeout or None):
                while True:
                    error = f"  last error: {view['last_error']}" if view.get("last_error") else ""
                    context.out().print(
                        f"{view.get('updated_at', '')}  {view['id']}  {view['status']}  "
                        f"attempts {view.get('attempts', 0)}{error}"
                    )
                    if JobStatus(view["status"]).terminal:
                        return str(view["status"])
                    view = await events.get()

    try:
        final = context.in_store(follow)
    except TimeoutError:
        raise JobStateError(f"job {job_id} did not end within {timeout:g} s") from None
    raise typer.Exit(0 if final == JobStatus.SUCCEEDED.value else 1)


@app.command()
def jobs(
    status_filter: Annotated[
        JobStatus | None, typer.Option("--status", help="Only jobs in this state.")
    ] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many jobs.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue after this cursor.")] = None,
    as_json: context.JsonFlag = False,
) -> None:
    """List jobs newest first."""
    from jobstore.model import JobSearch
    from producers.tenancy import list_visible, page_view

    search = JobSearch(status=status_filter, type=job_type, limit=limit, cursor=cursor)
    found = context.in_store(lambda store: list_visible(store, context.client_viewer(), search))
    page = page_view(dataclasses.replace(found, jobs=[_opened(j) for j in found.jobs]))
    if as_json:
        context.print_json(page)
        return
    columns: list[context.Column] = [
        *("id", "status", "type", "attempts"),
        ("last error", lambda job: job["last_error"] or ""),
        "priority",
        ("updated", lambda job: context.to_the_second(job["updated_at"])),
    ]
    context.print_rows(page["jobs"], columns, whole=2, as_json=False)
    if page["next_cursor"]:
        context.out().print(f"more: --cursor {page['next_cursor']}")


@app.command()
def cancel(job_id: JobId, as_json: context.JsonFlag = False) -> None:
    """Cancel a job that has not started.

    A worker that receives it later acks it unrun.
    """
    from producers.client import AsyncClient

    async def go() -> dict[str, Any]:
        async with await AsyncClient.connect() as client:
            return await client.cancel(job_id)

    _print_job(context.run(go()), as_json)


@app.command("callback-secret")
def callback_secret(
    url: Annotated[
        str, typer.Argument(metavar="URL", help="The callback URL (its origin decides the secret).")
    ],
) -> None:
    """Print the secret that signs the callbacks to URL.

    The Standard Webhooks secret (whsec_...) of URL's origin: the receiver there verifies
    its deliveries with it.
    """
    from topology.settings import CallbackSettings, read_section
    from webhooks.callbacks import endpoint_secret

    settings = read_section(CallbackSettings)
    if settings.callback_signing_key is None:
        raise SettingsError("TASKQ_CALLBACK_SIGNING_KEY is not set; callbacks are not signed yet")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"{url!r} is not an http(s) URL")
    typer.echo(endpoint_secret(settings.callback_signing_key.get_secret_value(), url))


def _opened(job: "JobRecord") -> "JobRecord":
    """Return ``job`` with its result opened under the data keys of the environment."""
    from jobstore.sealed_jobs import opened

    return opened(job, context.data_sealer())
