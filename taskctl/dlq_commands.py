"""``taskctl dlq``: list, show, replay and purge dead letters, with filters and progress."""

from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer

from taskctl import context
from topology.errors import JobNotFoundError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection

    from consumers.dlq import DeadFilter, DeadLetter, Outcome, Progress
    from jobstore.model import JobStore
    from topology.compiled import CompiledGroup

T = TypeVar("T")
app = typer.Typer(
    name="dlq",
    help="Inspect, replay and purge dead letters.\n\nEach consumer group has a dead-letter queue (DLQ).",
    rich_markup_mode=None,
)

Group = Annotated[str, typer.Argument(help="The consumer group whose DLQ to work on.")]
JobId = Annotated[str | None, typer.Option("--id", help="Only this job.")]
JobType = Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")]
Reason = Annotated[
    str | None,
    typer.Option(
        help="Only this reason: exhausted, permanent, contract, poison, rejected, delivery_limit."
    ),
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
) -> "DeadFilter":
    from consumers.dlq import MAX_FILTER_CHARS, DeadFilter
    from topology.durations import parse_timedelta

    try:
        older = parse_timedelta(older_than)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--older-than") from exc
    if error is not None and len(error) > MAX_FILTER_CHARS:
        raise typer.BadParameter(f"at most {MAX_FILTER_CHARS} characters", param_hint="--error")
    return DeadFilter(
        job_id=job_id, job_type=job_type, reason=reason, error=error, older_than=older
    )


@app.command("list")
def list_(
    group: Annotated[
        str | None, typer.Argument(help="Only this consumer group's DLQ (default: every group's).")
    ] = None,
    job_id: JobId = None,
    job_type: JobType = None,
    reason: Reason = None,
    error: ErrorText = None,
    older_than: OlderThan = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many (default: every one).")
    ] = None,
    as_json: context.JsonFlag = False,
) -> None:
    """List dead letters; they stay in the DLQ.

    Every group's DLQ is read unless a GROUP is named, a page at a time.
    """
    chosen = _filter(job_id, job_type, reason, error, older_than)
    topology = context.compiled_topology(None)
    groups = [topology.group(group)] if group else list(topology.groups)
    found = _on_broker(lambda c: _listing(c, groups, chosen, limit))
    rows = [{"group": name} | letter.view() for name, letter in found]
    columns: list[context.Column] = [
        *("id", "reason", "group", "type", "attempts", ("last error", "error")),
        ("dead since", lambda row: context.to_the_second(row["dead_since"])),
    ]
    context.print_rows(rows, columns, whole=2, as_json=as_json)
    if not as_json:
        context.out().print(f"{len(rows)} dead letters")


@app.command()
def show(group: Group, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one dead letter in full, envelope included."""
    from consumers.dlq import DeadFilter

    compiled = context.compiled_topology(None).group(group)
    chosen = DeadFilter(job_id=job_id)
    found = _on_broker(lambda c: _listing(c, [compiled], chosen, 1))
    if not found:
        raise JobNotFoundError(f"no dead letter for job {job_id} in group {group}")
    letter = found[0][1]
    envelope = letter.envelope.model_dump(mode="json") if letter.envelope else None
    context.print_json({"group": group} | letter.view() | {"envelope": envelope})


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
    """Send dead letters back to work, rate-limited.

    Attempts start again from 1; idempotency keys are kept.
    """
    from consumers.dlq import DeadFilter, replay
    from producers.publisher import ConfirmedPublisher
    from topology.settings import PublisherSettings, read_section

    chosen = _filter(job_id, job_type, reason, error, older_than)
    if chosen == DeadFilter() and not all_:
        raise typer.BadParameter(
            "give a filter (--id, --type, --reason, --error, --older-than) or --all"
        )
    topology = context.compiled_topology(None)
    compiled = topology.group(group)

    async def work(
        connection: "AbstractRobustConnection", store: "JobStore", bar: "Progress"
    ) -> "Outcome":
        settings = read_section(PublisherSettings)
        publisher = await ConfirmedPublisher.connect(
            context.broker_settings(), topology, settings, name="taskctl dlq replay"
        )
        try:
            return await replay(
                connection, topology, compiled, publisher, store, chosen, rate=rate, progress=bar
            )
        finally:
            await publisher.close()

    _audited(group, "replay", chosen, work, rate=rate)


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
    """Delete dead letters for good; asks first unless --yes."""
    from consumers.dlq import purge

    chosen = _filter(job_id, job_type, reason, error, older_than)
    compiled = context.compiled_topology(None).group(group)
    if not yes:
        typer.confirm(f"delete the matching dead letters of group {group} for good?", abort=True)
    _audited(
        group,
        "purge",
        chosen,
        lambda connection, _, bar: purge(connection, compiled, chosen, progress=bar),
    )


def _audited(
    group: str,
    action: 'Literal["replay", "purge"]',
    chosen: "DeadFilter",
    work: "Callable[[AbstractRobustConnection, JobStore, Progress], Awaitable[Outcome]]",
    *,
    rate: float | None = None,
) -> None:
    """Run ``work`` on a broker connection and the job store, audited, with a progress bar; print what it did."""
    from rich.progress import Progress as Bar

    from taskctl.dlq_audit import audited, operator

    doing, done = {"replay": ("replaying", "replayed"), "purge": ("purging", "purged")}[action]
    console = context.out(stderr=True)  # the bar is for a person only: nothing to a pipe

    async def go(connection: "AbstractRobustConnection") -> "Outcome":
        async with context.job_store() as store:
            with Bar(console=console, transient=True, disable=not console.is_terminal) as bar:
                task = bar.add_task(doing, total=None)
                shown = partial(bar.update, task)
                run = partial(
                    work, connection, store, lambda n, total: shown(completed=n, total=total)
                )
                return await audited(store, operator(), group, action, chosen, run, rate=rate)

    outcome = _on_broker(go)
    context.out().print(
        f"{done} {outcome.matched}, left {outcome.kept} in the DLQ of group {group}"
    )


def _on_broker(work: "Callable[[AbstractRobustConnection], Coroutine[Any, Any, T]]") -> T:
    """Run ``work`` on a broker connection of its own."""
    from topology.broker import connect

    async def go() -> T:
        async with await connect(context.broker_settings(), name="taskctl dlq") as connection:
            return await work(connection)

    return context.run(go())


async def _listing(
    connection: "AbstractRobustConnection",
    groups: "list[CompiledGroup]",
    chosen: "DeadFilter",
    limit: int | None,
) -> "list[tuple[str, DeadLetter]]":
    from consumers.dlq import PAGE, listing

    found: list[tuple[str, DeadLetter]] = []
    for group in groups:
        cursor: str | None = None
        while limit is None or len(found) < limit:
            wanted = PAGE if limit is None else min(PAGE, limit - len(found))
            page = await listing(connection, group, chosen, limit=wanted, cursor=cursor)
            found += [(group.name, letter) for letter in page.letters]
            if (cursor := page.cursor) is None:
                break
    return found
