"""``taskctl submit|status|watch|jobs|queues``: the job API's work from a terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from jobstore.model import JobStatus
from producers.client import AsyncClient
from producers.submit import JobRequest
from taskctl.context import out, run, settings_or_exit, topology_or_exit
from taskctl.watching import follow_job
from topology.errors import TaskqError
from topology.management import ManagementClient
from topology.spec import Priority

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")
]


def _emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        out.print(table)


def _job_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("id", "type", "status", "priority", "attempts", "updated", "last error")
    for job in jobs:
        table.add_row(
            job["id"],
            job["type"],
            job["status"],
            job["priority"],
            str(job["attempts"]),
            job["updated_at"],
            (job["last_error"] or "")[:60],
        )
    return table


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
    """Submit a job (with publisher confirms) and print it."""
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

    job = run(go())
    _emit(job, as_json, _job_table([job]))


def status(job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False) -> None:
    """Print a job's status, attempts, timestamps, last error and result."""

    async def go() -> dict[str, Any]:
        async with await AsyncClient.connect() as client:
            return await client.status(job_id)

    job = run(go())
    _emit(job, as_json, _job_table([job]))


def watch(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    timeout: Annotated[
        float, typer.Option(min=0, help="Give up after this many seconds (0 = never).")
    ] = 0,
) -> None:
    """Follow a job live until it reaches a final state; exit 0 if it succeeded."""

    async def go() -> str:
        async with await AsyncClient.connect() as client:
            return await follow_job(
                client, settings_or_exit(), topology_or_exit(None), job_id, timeout or None
            )

    final = run(go())
    raise typer.Exit(0 if final == JobStatus.SUCCEEDED.value else 1)


def jobs(
    status_filter: Annotated[
        JobStatus | None, typer.Option("--status", help="Only jobs in this state.")
    ] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option(help="Continue after this cursor.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List jobs newest first."""

    async def go() -> dict[str, Any]:
        async with await AsyncClient.connect() as client:
            return await client.list(
                status=status_filter, type=job_type, limit=limit, cursor=cursor
            )

    page = run(go())
    _emit(page, as_json, _job_table(page["jobs"]))
    if not as_json and page["next_cursor"]:
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


def cancel(job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonFlag = False) -> None:
    """Cancel a job that has not started (a worker that receives it acks it unrun)."""

    async def go() -> dict[str, Any]:
        async with await AsyncClient.connect() as client:
            return await client.cancel(job_id)

    job = run(go())
    _emit(job, as_json, _job_table([job]))


def queues(as_json: JsonFlag = False) -> None:
    """Show each group's work queues: ready, unacked, consumers and rates (management API)."""
    topology = topology_or_exit(None)
    settings = settings_or_exit()

    async def go() -> list[dict[str, Any]]:
        rows = []
        async with ManagementClient(settings) as client:
            for group in topology.groups:
                for name in (*group.queue_names, group.dead_letter_queue):
                    rows.append(_queue_row(group.name, await client.queue(settings.vhost, name)))
        return rows

    rows = run(go())
    table = Table("group", "queue", "ready", "unacked", "consumers", "in/s", "acked/s")
    for row in rows:
        table.add_row(
            row["group"],
            row["queue"],
            str(row["ready"]),
            str(row["unacked"]),
            str(row["consumers"]),
            f"{row['publish_rate']:.1f}",
            f"{row['ack_rate']:.1f}",
        )
    _emit(rows, as_json, table)


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
