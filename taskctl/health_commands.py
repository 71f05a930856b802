"""``taskctl scale|queues|breakers|doctor``: how the running pipeline is doing."""

import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from taskctl import context
from topology.errors import SettingsError

if TYPE_CHECKING:
    from jobstore.model import JobStore
    from topology.compiled import CompiledTopology
    from topology.settings import BrokerSettings

app = typer.Typer(rich_markup_mode=None)


@app.command()
def scale(
    url: Annotated[
        str | None,
        typer.Option(help="The autoscaler's status URL (default: TASKQ_AUTOSCALER_HOST:PORT)."),
    ] = None,
    as_json: context.JsonFlag = False,
) -> None:
    """Show what the autoscaler sees and decided.

    Each group's backlog, current and desired workers, the last decision and why, and the
    publish and ack rates (a stream source's readers as ``stream:<source>``), read from the
    status URL of a running taskctl up or autoscale.
    """
    from taskctl.admin_key import caller_key
    from taskctl.autoscaler_status import read_status, status_url
    from topology.settings import AutoscalerSettings, read_section

    url = url or status_url(read_section(AutoscalerSettings))
    status = context.run(read_status(url, caller_key()))
    if status.problem is not None:
        raise SettingsError(status.problem)
    columns: list[context.Column] = [
        "group",
        ("backlog", lambda g: "?" if g["backlog"] is None else str(g["backlog"])),
        *("current", "desired"),
        ("why", lambda g: g["reason"] + (f" [{g['error']}]" if g["error"] else "")),
        (
            "decided",
            lambda g: f"{time.time() - g['decided_at']:.0f}s ago" if g["decided_at"] else "-",
        ),
        ("in/s", lambda g: "?" if g["publish_rate"] is None else f"{g['publish_rate']:.1f}"),
        ("acked/s", lambda g: "?" if g["ack_rate"] is None else f"{g['ack_rate']:.1f}"),
    ]
    context.print_rows(status.groups, columns, whole=1, as_json=as_json)


@app.command()
def queues(as_json: context.JsonFlag = False) -> None:
    """Show each group's queues: depth, consumers, rates.

    Ready and unacked messages, consumers and publish and ack rates of every work queue and
    DLQ, read through the management API.
    """
    from topology.management import ManagementClient, message_rate

    topology = context.compiled_topology(None)
    settings = context.broker_settings()

    async def go() -> list[dict[str, Any]]:
        rows = []
        async with ManagementClient(settings) as client:
            for group in topology.groups:
                for name in (*group.queue_names, group.dead_letter_queue):
                    data = await client.queue(settings.vhost, name)
                    rows.append(
                        {
                            "group": group.name,
                            "queue": data.get("name"),
                            "ready": int(data.get("messages_ready") or 0),
                            "unacked": int(data.get("messages_unacknowledged") or 0),
                            "consumers": int(data.get("consumers") or 0),
                            "publish_rate": message_rate(data, "publish_details"),
                            "ack_rate": message_rate(data, "ack_details"),
                        }
                    )
        return rows

    columns: list[context.Column] = [
        *("queue", "ready", "unacked", "consumers", "group"),
        ("in/s", lambda row: f"{row['publish_rate']:.1f}"),
        ("acked/s", lambda row: f"{row['ack_rate']:.1f}"),
    ]
    context.print_rows(context.run(go()), columns, whole=1, as_json=as_json)


@app.command()
def breakers(
    group: Annotated[str | None, typer.Option("--group", help="Only this consumer group.")] = None,
    as_json: context.JsonFlag = False,
) -> None:
    """List the circuit breakers of running workers.

    A breaker shows once it has opened: its state, failures and how long it has been so.
    """
    from topology.durations import format_duration

    if group is not None:  # an unknown group is an error, not an empty list
        context.compiled_topology(None).group(group)
    now = datetime.now(UTC)
    rows = [
        asdict(record)
        | {
            "changed_at": record.changed_at.isoformat(),
            # A worker's clock may run a little ahead of ours: an age is never negative.
            "age_s": round(max(0.0, (now - record.changed_at).total_seconds()), 3),
        }
        for record in context.in_store(lambda s: s.list_breakers(group))
    ]
    if not rows and not as_json:
        where = f" in group {group}" if group else ""
        context.out().print(
            f"no circuit breakers recorded{where}: no running worker's breaker has opened"
        )
        return
    columns: list[context.Column] = [
        *("dependency", "state", "group", "worker", "failures"),
        ("since", lambda row: format_duration(int(row["age_s"]) * 1000)),
    ]
    context.print_rows(rows, columns, whole=2, as_json=as_json)


@app.command()
def doctor(as_json: context.JsonFlag = False) -> None:
    """Check that store and broker agree on waiting jobs.

    For each group, the jobs the store holds as queued or scheduled must not outnumber the
    messages on its queues and the delay tiers (ready, and unacked where workers hold
    some); a queued job of a type no group takes is a problem too. Exits 1 on a problem.
    """
    problems = context.in_store(
        lambda store: diagnose(store, context.compiled_topology(None), context.broker_settings())
    )
    if as_json:
        context.print_json({"ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            context.out().print(problem)
    else:
        context.out().print("ok: every queued or scheduled job has a message on the broker")
    if problems:
        raise typer.Exit(1)


async def diagnose(
    store: "JobStore", topology: "CompiledTopology", settings: "BrokerSettings"
) -> list[str]:
    """Return what is inconsistent between the store and the broker (nothing when all is well)."""
    waiting, unrouted = await _waiting_jobs(store, topology)
    messages, delayed = await _messages(topology, settings)
    problems = [
        f"{count} queued jobs of type {job_type} no group takes"
        for job_type, count in sorted(unrouted.items())
    ]
    for group, jobs in sorted(waiting.items()):
        held = messages[group] + delayed
        if jobs > held:
            problems.append(
                f"group {group}: {jobs} jobs queued or scheduled in the store but {held} "
                "messages on its queues and the delay tiers"
            )
    return problems


async def _waiting_jobs(
    store: "JobStore", topology: "CompiledTopology"
) -> tuple[Counter[str], Counter[str]]:
    """Return the store's queued and scheduled jobs counted by group, and those of no group by type."""
    from jobstore.model import JobSearch, JobStatus

    by_group: Counter[str] = Counter()
    unrouted: Counter[str] = Counter()
    for status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
        cursor: str | None = None
        while True:
            page = await store.list_jobs(JobSearch(status=status, limit=500, cursor=cursor))
            for job in page.jobs:
                group = topology.group_for(job.type)
                if group is None:
                    unrouted[job.type] += 1
                else:
                    by_group[group.name] += 1
            if (cursor := page.next_cursor) is None:
                break
    return by_group, unrouted


async def _messages(
    topology: "CompiledTopology", settings: "BrokerSettings"
) -> tuple[Counter[str], int]:
    """Return the messages on each group's queues, and on the delay tiers together."""
    from topology.broker import connect, existing
    from topology.management import ManagementClient

    messages: Counter[str] = Counter()
    consumed: list[tuple[str, str]] = []
    async with await connect(settings, name="taskctl doctor") as connection:
        channel = await connection.channel()

        async def declared(name: str) -> Any:
            with existing(name):
                return (await channel.declare_queue(name, passive=True)).declaration_result

        for group in topology.groups:
            for name in group.queue_names:
                result = await declared(name)
                messages[group.name] += result.message_count or 0  # ready: exact, now
                if result.consumer_count:
                    consumed.append((group.name, name))
        delayed = sum([(await declared(tier.queue)).message_count or 0 for tier in topology.tiers])
    if consumed:  # workers hold prefetched messages unacked: only the management API sees them
        async with ManagementClient(settings) as client:
            for group_name, name in consumed:
                queue = await client.queue(settings.vhost, name)
                messages[group_name] += int(queue.get("messages_unacknowledged") or 0)
    return messages, delayed
