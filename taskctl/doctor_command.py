"""``taskctl doctor``: checks that the job store and the broker tell the same story."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import typer

from taskctl.context import JsonFlag, broker_settings, compiled_topology, in_store, out, print_json

if TYPE_CHECKING:
    from jobstore.model import JobStore
    from topology.compiled import CompiledTopology
    from topology.settings import BrokerSettings


def doctor(as_json: JsonFlag = False) -> None:
    """Check that store and broker agree on waiting jobs.

    For each group, the jobs the store holds as queued or scheduled must not outnumber the
    messages on its queues and the delay tiers (ready, and unacked where workers hold
    some); a queued job of a type no group takes is a problem too. Exits 1 on a problem.
    """
    problems = in_store(lambda store: diagnose(store, compiled_topology(None), broker_settings()))
    if as_json:
        print_json({"ok": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            out().print(problem)
    else:
        out().print("ok: every queued or scheduled job has a message on the broker")
    if problems:
        raise typer.Exit(1)


async def diagnose(
    store: JobStore, topology: CompiledTopology, settings: BrokerSettings
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
    store: JobStore, topology: CompiledTopology
) -> tuple[Counter[str], Counter[str]]:
    """Return the store's queued and scheduled jobs counted by group, and those of no group by type."""
    from jobstore.model import JobStatus

    by_group: Counter[str] = Counter()
    unrouted: Counter[str] = Counter()
    for status in (JobStatus.QUEUED, JobStatus.SCHEDULED):
        cursor: str | None = None
        while True:
            page = await store.list_jobs(status=status, limit=500, cursor=cursor)
            for job in page.jobs:
                group = topology.group_for(job.type)
                if group is None:
                    unrouted[job.type] += 1
                else:
                    by_group[group.name] += 1
            cursor = page.next_cursor
            if cursor is None:
                break
    return by_group, unrouted


async def _messages(
    topology: CompiledTopology, settings: BrokerSettings
) -> tuple[Counter[str], int]:
    """Return the messages on each group's queues, and on the delay tiers together."""
    from topology.broker import connect
    from topology.management import ManagementClient

    messages: Counter[str] = Counter()
    consumed: list[tuple[str, str]] = []
    connection = await connect(settings, name="taskctl doctor")
    async with connection:
        channel = await connection.channel()
        for group in topology.groups:
            for name in group.queue_names:
                declared = (await channel.declare_queue(name, passive=True)).declaration_result
                messages[group.name] += declared.message_count or 0  # ready: exact, now
                if declared.consumer_count:
                    consumed.append((group.name, name))
        delayed = 0
        for tier in topology.tiers:
            declared = (await channel.declare_queue(tier.queue, passive=True)).declaration_result
            delayed += declared.message_count or 0
    if consumed:  # workers hold prefetched messages unacked: only the management API sees them
        async with ManagementClient(settings) as client:
            for group_name, name in consumed:
                queue = await client.queue(settings.vhost, name)
                messages[group_name] += int(queue.get("messages_unacknowledged") or 0)
    return messages, delayed
