"""``taskctl dlq``: list, show, replay and purge dead letters, with filters and progress."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import orjson
import typer
from rich.progress import Progress as Bar
from rich.table import Table

from consumers.dlq import MAX_FILTER_CHARS, PAGE, DeadFilter, DeadLetter, listing, purge, replay
from producers.backends import open_backends
from producers.publisher import ConfirmedPublisher
from taskctl.context import err, out, run
from topology.broker import connect
from topology.durations import parse_duration
from topology.errors import SettingsError

app = typer.Typer(help="Inspect, replay and purge a group's dead-letter queue.")

Group = Annotated[str, typer.Argument(help="The consumer group whose DLQ to work on.")]
JobId = Annotated[str | None, typer.Option("--id", help="Only this job.")]
JobType = Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")]
Reason = Annotated[
    str | None,
    typer.Option(help="Only this reason: exhausted, permanent, contract, poison, rejected."),
]
ErrorText = Annotated[
    str | None,
    typer.Option("--error", help="Only jobs whose last error contains this text (not a pattern)."),
]
OlderThan = Annotated[
    str | None, typer.Option(help="Only dead letters older than this (e.g. 1h, 2d).")
]


def _filter(
    job_id: str | None,
    job_type: str | None,
    reason: str | None,
    error: str | None,
    older_than: str | None,
) -> DeadFilter:
    try:
        age = None if older_than is None else timedelta(milliseconds=parse_duration(older_than))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from exc
    if error is not None and len(error) > MAX_FILTER_CHARS:
        raise typer.BadParameter(f"at most {MAX_FILTER_CHARS} characters", param_hint="--error")
    return DeadFilter(job_id=job_id, job_type=job_type, reason=reason, error=error, older_than=age)


@app.command("list")
def list_(
    group: Group,
    job_id: JobId = None,
    job_type: JobType = None,
    reason: Reason = None,
    error: ErrorText = None,
    older_than: OlderThan = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many (default: every one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List dead letters (they stay in the DLQ), reading it a page at a time."""
    chosen = _filter(job_id, job_type, reason, error, older_than)
    rows = [letter.view() for letter in run(_listing(group, chosen, limit))]
    if as_json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("id", "type", "reason", "attempts", "dead since", "last error")
    for row in rows:
        table.add_row(
            row["id"],
            row["type"],
            row["reason"],
            str(row["attempts"]),
            row["dead_since"] or "",
            row["error"][:80],
        )
    out.print(table)
    out.print(f"{len(rows)} dead letters", highlight=False)


@app.command()
def show(group: Group, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one dead letter in full, envelope included."""
    letters = run(_listing(group, DeadFilter(job_id=job_id), 1))
    if not letters:
        err.print(f"no dead letter for job {job_id} in group {group}")
        raise typer.Exit(1)
    letter = letters[0]
    data = letter.view() | {
        "envelope": letter.envelope.model_dump(mode="json") if letter.envelope else None
    }
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


@app.command("replay")
def replay_(
    group: Group,
    job_id: JobId = None,
    job_type: JobType = None,
    reason: Reason = None,
    error: ErrorText = None,
    older_than: OlderThan = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Replay every dead letter (no filter).")
    ] = False,
    rate: Annotated[float, typer.Option(min=0.1, help="Jobs per second at most.")] = 50.0,
) -> None:
    """Send dead letters back to work: attempts reset, idempotency keys kept, rate-limited."""
    chosen = _filter(job_id, job_type, reason, error, older_than)
    if chosen == DeadFilter() and not all_:
        raise typer.BadParameter(
            "give a filter (--id, --type, --reason, --error, --older-than) or --all"
        )
    outcome = run(_replay(group, chosen, rate))
    out.print(
        f"replayed {outcome.matched}, left {outcome.kept + outcome.skipped_undecodable} in the DLQ",
        highlight=False,
    )


@app.command("purge")
def purge_(
    group: Group,
    job_id: JobId = None,
    job_type: JobType = None,
    reason: Reason = None,
    error: ErrorText = None,
    older_than: OlderThan = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good (asks first unless --yes)."""
    chosen = _filter(job_id, job_type, reason, error, older_than)
    if not yes:
        typer.confirm(f"delete the matching dead letters of group {group} for good?", abort=True)
    outcome = run(_purge(group, chosen))
    out.print(f"purged {outcome.matched}, left {outcome.kept} in the DLQ", highlight=False)


async def _context(group: str) -> tuple[Any, Any]:
    backends = await open_backends()
    try:
        return backends, backends.topology.group(group)
    except KeyError as exc:
        await backends.close()
        known = ", ".join(g.name for g in backends.topology.groups)
        raise SettingsError(f"no group {group!r} in the topology; groups: {known}") from exc


async def _listing(group: str, chosen: DeadFilter, limit: int | None) -> list[DeadLetter]:
    backends, compiled = await _context(group)
    found: list[DeadLetter] = []
    try:
        async with await connect(backends.broker, name="taskctl dlq") as connection:
            cursor: str | None = None
            while limit is None or len(found) < limit:
                wanted = PAGE if limit is None else min(PAGE, limit - len(found))
                page = await listing(connection, compiled, chosen, limit=wanted, cursor=cursor)
                found += page.letters
                cursor = page.cursor
                if cursor is None:
                    break
    finally:
        await backends.close()
    return found


async def _replay(group: str, chosen: DeadFilter, rate: float) -> Any:
    backends, compiled = await _context(group)
    publisher = await ConfirmedPublisher.connect(
        backends.broker, backends.topology, backends.publisher, name="taskctl dlq replay"
    )
    try:
        async with await connect(backends.broker, name="taskctl dlq") as connection:
            with _bar() as bar:
                task = bar.add_task("replaying", total=None)
                return await replay(
                    connection,
                    backends.topology,
                    compiled,
                    publisher,
                    backends.store,
                    chosen,
                    rate=rate,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
    finally:
        await publisher.close()
        await backends.close()


async def _purge(group: str, chosen: DeadFilter) -> Any:
    backends, compiled = await _context(group)
    try:
        async with await connect(backends.broker, name="taskctl dlq") as connection:
            with _bar() as bar:
                task = bar.add_task("purging", total=None)
                return await purge(
                    connection,
                    compiled,
                    chosen,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
    finally:
        await backends.close()


def _bar() -> Bar:
    return Bar(console=err, transient=True)
