"""Apply the topology to a live broker: idempotent declares, refused conflicts, opt-in deletes."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, ExchangeType

from topology.broker import CONNECT_ERRORS, ServerInfo, server_info
from topology.errors import BrokerUnavailableError, TopologyConflictError
from topology.management import ManagementClient
from topology.model import Binding, CompiledTopology, Exchange, Queue
from topology.plan import Action, LiveState, Plan, describe, make_plan
from topology.settings import BrokerSettings, mask_url

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What ``apply`` found before and after declaring."""

    server: ServerInfo
    before: Plan
    after: Plan
    deleted: tuple[str, ...]

    def summary(self) -> str:
        """Return what was done, in counts of what happened only: ``59 created``, ``59 unchanged``."""
        counts = {
            "created": len(self.before.of(Action.CREATE)),
            "unchanged": len(self.before.of(Action.MATCH)),
            "deleted": len(self.deleted),
        }
        return ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "nothing declared"


async def read_live(client: ManagementClient, vhost: str) -> LiveState:
    """Return the exchanges, queues and bindings ``vhost`` holds now."""
    return LiveState.from_management(
        await client.exchanges(vhost), await client.queues(vhost), await client.bindings(vhost)
    )


async def plan_topology(topology: CompiledTopology, settings: BrokerSettings) -> Plan:
    """Return what applying ``topology`` would change on the broker of ``settings``."""
    async with ManagementClient(settings) as client:
        return make_plan(topology, await read_live(client, settings.vhost))


async def apply_topology(
    topology: CompiledTopology,
    settings: BrokerSettings,
    *,
    recreate: Collection[str] = (),
    prune: bool = False,
    progress: Progress = lambda _: None,
) -> ApplyReport:
    """Declare ``topology`` on the broker; never delete unless ``recreate``/``prune`` ask."""
    async with ManagementClient(settings) as client:
        before = make_plan(topology, await read_live(client, settings.vhost))
        _refuse_conflicts(before, recreate)
        deleted = await _delete(client, settings.vhost, before, recreate, prune, progress)
        server = await declare(topology, settings, progress=progress)
        after = make_plan(topology, await read_live(client, settings.vhost))
    return ApplyReport(server, before, after, deleted)


def conflict_message(plan: Plan) -> str:
    """Return the text that explains every conflict in ``plan`` and how to migrate."""
    lines = ["the broker holds declarations that differ from the topology file:"]
    for item in plan.of(Action.CONFLICT):
        lines += [f"  {item.label}: {item.detail}", f"    hint: {item.hint}"]
    return "\n".join(lines)


def _refuse_conflicts(plan: Plan, recreate: Collection[str]) -> None:
    unresolved = [i for i in plan.of(Action.CONFLICT) if _name(i.declared) not in recreate]
    if unresolved:
        raise TopologyConflictError(conflict_message(Plan(tuple(unresolved))))


async def _delete(
    client: ManagementClient,
    vhost: str,
    plan: Plan,
    recreate: Collection[str],
    prune: bool,
    progress: Progress,
) -> tuple[str, ...]:
    doomed = [
        i.declared
        for i in plan.of(Action.CONFLICT)
        if isinstance(i.declared, Exchange | Queue) and i.declared.name in recreate
    ]
    if prune:
        doomed += [i.live for i in plan.of(Action.EXTRA) if isinstance(i.live, Exchange | Queue)]
    # Refuse before deleting anything, so a refusal leaves the broker untouched.
    live = await read_live(client, vhost)
    for obj in doomed:
        if isinstance(obj, Queue) and live.messages.get(obj.name, 0):
            raise TopologyConflictError(
                f"queue {obj.name} holds {live.messages[obj.name]} messages; drain it (or move "
                "them with a shovel) before recreating or pruning it"
            )
    deleted = []
    if prune:
        # Bindings first: deleting an exchange or queue takes its bindings with it.
        for item in plan.of(Action.EXTRA):
            if isinstance(item.live, Binding) and item.live.destination not in {
                _name(o) for o in doomed
            }:
                key = live.binding_keys.get(item.live, "~")
                await client.delete_binding(
                    vhost, item.live.source, item.live.destination, item.live.destination_type, key
                )
                deleted.append(describe(item.live))
                progress(f"deleted {deleted[-1]}")
    for obj in doomed:
        if isinstance(obj, Queue):
            await client.delete_queue(vhost, obj.name)
            deleted.append(f"queue {obj.name}")
        elif isinstance(obj, Exchange):
            await client.delete_exchange(vhost, obj.name)
            deleted.append(f"exchange {obj.name}")
        progress(f"deleted {deleted[-1]}")
    return tuple(deleted)


def _name(obj: object) -> str | None:
    return obj.name if isinstance(obj, Exchange | Queue) else None


async def declare(
    topology: CompiledTopology, settings: BrokerSettings, *, progress: Progress = lambda _: None
) -> ServerInfo:
    """Declare every exchange, queue and binding over AMQP (idempotent)."""
    url = settings.amqp_url.get_secret_value()
    try:
        connection = await aio_pika.connect(
            url,
            timeout=settings.connect_timeout,
            client_properties={"connection_name": "taskctl topology apply"},
        )
    except CONNECT_ERRORS as exc:
        raise BrokerUnavailableError(
            f"cannot connect to RabbitMQ at {mask_url(url)}: {exc}"
        ) from exc
    async with connection:
        channel = await connection.channel()
        try:
            await _declare_all(channel, topology, progress)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyConflictError(
                f"RabbitMQ refused a declaration: {exc}; run `taskctl topology plan` for details"
            ) from exc
        return server_info(connection)  # type: ignore[arg-type]


async def _declare_all(
    channel: AbstractChannel, topology: CompiledTopology, progress: Progress
) -> None:
    for exchange in topology.exchanges:
        await channel.declare_exchange(
            exchange.name,
            ExchangeType(exchange.type),
            durable=exchange.durable,
            auto_delete=exchange.auto_delete,
            internal=exchange.internal,
            arguments=dict(exchange.arguments),
        )
    progress(f"declared {len(topology.exchanges)} exchanges")
    for queue in topology.queues:
        await channel.declare_queue(
            queue.name,
            durable=queue.durable,
            auto_delete=queue.auto_delete,
            arguments=dict(queue.arguments),
        )
    progress(f"declared {len(topology.queues)} queues")
    for binding in topology.bindings:
        await _bind(channel, binding)
    progress(f"declared {len(topology.bindings)} bindings")


async def _bind(channel: AbstractChannel, binding: Binding) -> None:
    source = await channel.get_exchange(binding.source, ensure=False)
    arguments: dict[str, Any] = dict(binding.arguments)
    if binding.destination_type == "queue":
        queue = await channel.get_queue(binding.destination, ensure=False)
        await queue.bind(source, binding.routing_key, arguments=arguments)
    else:
        target = await channel.get_exchange(binding.destination, ensure=False)
        await target.bind(source, binding.routing_key, arguments=arguments)
