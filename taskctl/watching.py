"""Follow one job's status events live until it reaches a final state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from jobstore.model import JobStatus
from producers.events import decode_event
from taskctl.context import out
from topology.broker import connect
from topology.compiled import CompiledTopology
from topology.settings import BrokerSettings

StatusOf = Callable[[str], Awaitable[dict[str, Any]]]  # a job's view by its id


async def follow_job(
    status_of: StatusOf,
    broker: BrokerSettings,
    topology: CompiledTopology,
    job_id: str,
    within: float | None,
) -> str:
    """Print the job's status changes until it is final (or ``within`` s passed: TimeoutError); return it."""
    job = await status_of(job_id)
    connection = await connect(broker, name=f"taskctl watch {job_id}")
    async with connection:
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
        current = await status_of(job_id)
        _show(current)
        status = str(current["status"])
        async with asyncio.timeout(within):
            while not JobStatus(status).terminal:
                event = await events.get()
                _show(event)
                status = str(event["status"])
    return status


def _show(view: dict[str, Any]) -> None:
    error = f"  last error: {view['last_error']}" if view.get("last_error") else ""
    out().print(
        f"{view.get('updated_at', '')}  {view['id']}  {view['status']}  attempts {view.get('attempts', 0)}{error}"
    )
