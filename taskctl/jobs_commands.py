"""``taskctl submit|status|watch|jobs|cancel|queues``: the job API's work from a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from jobstore.model import JobStatus
from taskctl.context import (
    Cell,
    JsonFlag,
    broker_settings,
    compiled_topology,
    in_store,
    job_store,
    out,
    print_json,
    print_rows,
    run,
    to_the_second,
)
from topology.errors import TaskqError
from topology.priority import Priority

if TYPE_CHECKING:
    from producers.tenancy import Viewer

JobId = Annotated[str, typer.Argument(metavar="ID", help="The job's id.")]
# What a single job shows, in this order, when set; each labelled "created", "max attempts".
_FIELDS = (
    *("id", "status", "type", "priority", "attempts", "max_attempts", "created_at", "updated_at"),
    *("not_before", "started_at", "finished_at", "idempotency_key", "correlation_id"),
    *("callback_url", "tenant", "last_error", "result", "payload_ref"),
)


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(job)
        return
    # Plain lines, label then value: nothing to cut, and the terminal wraps a long value.
    for key in _FIELDS:
        value = job.get(key)
        if value is not None:
            label = key.removesuffix("_at").removesuffix("_ref").replace("_", " ")
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            typer.echo(f"{label:<17}{text}".replace("\n", "\n" + " " * 17))


_JOB_COLUMNS: tuple[tuple[str, Cell], ...] = (
    *(("id", "id"), ("status", "status"), ("type", "type"), ("attempts", "attempts")),
    ("last error", lambda job: job["last_error"] or ""),
    ("priority", "priority"),
    ("updated", lambda job: to_the_second(job["updated_at"])),
)


def _viewer() -> Viewer:
    """Return whose jobs the commands see: ``TASKQ_TENANT``'s, as the Python clients do."""
    from producers.tenancy import Viewer
    from topology.settings import ClientSettings, read_section

    return Viewer(read_section(ClientSettings).tenant)


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
    as_json: JsonFlag = False,
) -> None:
    """Submit a job and print it once the broker confirmed it."""
    from producers.client import AsyncClient
    from producers.submit import JobRequest

    data = _payload(payload)
    request = JobRequest(
        type=job_type, payload=data, priority=priority, delay=delay, idempotency_key=idempotency_key
    )

    async def go() -> dict[str, Any]:
        async with await AsyncClient.connect() as client:
            results = await client.submit_many([request])
        if isinstance(results[0], TaskqError):
            raise results[0]
        return results[0]

    _print_job(run(go()), as_json)


def status(job_id: JobId, as_json: JsonFlag = False) -> None:
    """Print a job: status, attempts, times, error, result."""
    from producers.tenancy import get_visible
    from producers.views import job_view

    _print_job(job_view(in_store(lambda store: get_visible(store, _viewer(), job_id))), as_json)


def watch(
    job_id: JobId,
    timeout: Annotated[
        float, typer.Option(min=0, help="Give up after this many seconds (0 = never).")
    ] = 0,
) -> None:
    """Follow a job live until it reaches a final state.

    Exits 0 if the job succeeded, 1 if it ended otherwise.
    """
    from producers.tenancy import get_visible
    from producers.views import job_view
    from taskctl.watching import follow_job

    broker = broker_settings()
    topology = compiled_topology(None)

    async def go() -> str:
        viewer = _viewer()
        async with job_store() as store:

            async def current(job_id: str) -> dict[str, Any]:
                return job_view(await get_visible(store, viewer, job_id))

            return await follow_job(current, broker, topology, job_id, timeout or None)

    final = run(go())
    raise typer.Exit(0 if final == JobStatus.SUCCEEDED.value else 1)


def jobs(
    status_filter: Annotated[
        JobStatus | None, typer.Option("--status", help="Only jobs in this state.")
    ] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many jobs.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue after this cursor.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List jobs newest first."""
    from producers.tenancy import list_visible
    from producers.views import job_view

    found = in_store(
        lambda store: list_visible(
            store, _viewer(), status=status_filter, job_type=job_type, limit=limit, cursor=cursor
        )
    )
    views = [job_view(j) for j in found.jobs]
    if as_json:
        print_json({"jobs": views, "next_cursor": found.next_cursor})
        return
    print_rows(views, _JOB_COLUMNS, whole=2, as_json=False)
    if found.next_cursor:
        out().print(f"more: --cursor {found.next_cursor}")


def cancel(job_id: JobId, as_json: JsonFlag = False) -> None:
    """Cancel a job that has not started.

    A worker that receives it later acks it unrun.
    """
    from producers.client import AsyncClient

    async def go() -> dict[str, Any]:
        async with await AsyncClient.connect() as client:
            return await client.cancel(job_id)

    _print_job(run(go()), as_json)


def queues(as_json: JsonFlag = False) -> None:
    """Show each group's queues: depth, consumers, rates.

    Ready and unacked messages, consumers and publish and ack rates of every work queue and
    DLQ, read through the management API.
    """
    from topology.management import ManagementClient

    topology = compiled_topology(None)
    settings = broker_settings()

    async def go() -> list[dict[str, Any]]:
        rows = []
        async with ManagementClient(settings) as client:
            for group in topology.groups:
                for name in (*group.queue_names, group.dead_letter_queue):
                    rows.append(_queue_row(group.name, await client.queue(settings.vhost, name)))
        return rows

    columns: list[tuple[str, Cell]] = [
        *[("queue", "queue"), ("ready", "ready"), ("unacked", "unacked")],
        *[("consumers", "consumers"), ("group", "group")],
        ("in/s", lambda row: f"{row['publish_rate']:.1f}"),
        ("acked/s", lambda row: f"{row['ack_rate']:.1f}"),
    ]
    print_rows(run(go()), columns, whole=1, as_json=as_json)


def _queue_row(group: str, data: dict[str, Any]) -> dict[str, Any]:
    stats = data.get("message_stats") or {}
    return {
        "group": group,
        "queue": data.get("name"),
        "ready": int(data.get("messages_ready") or 0),
        "unacked": int(data.get("messages_unacknowledged") or 0),
        "consumers": int(data.get("consumers") or 0),
        "publish_rate": float((stats.get("publish_details") or {}).get("rate", 0.0)),
        "ack_rate": float((stats.get("ack_details") or {}).get("rate", 0.0)),
    }


def _payload(text: str) -> Any:
    raw = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"--payload is not JSON: {exc}") from exc
