"""Plan and apply the topology on a live broker: compare, declare idempotently, refuse conflicts, delete on request."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, ExchangeType

from topology.broker import ServerInfo, connect, server_info
from topology.compiled import Binding, CompiledTopology, Exchange, Queue, args
from topology.errors import TopologyConflictError
from topology.management import ManagementClient
from topology.settings import BrokerSettings


class Action(StrEnum):
    """What ``apply`` would do with one broker object."""

    CREATE = "create"
    MATCH = "match"
    CONFLICT = "conflict"
    EXTRA = "extra"


BrokerObject = Exchange | Queue | Binding


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One broker object and what ``apply`` would do with it."""

    action: Action
    declared: BrokerObject | None
    live: BrokerObject | None
    detail: str = ""
    hint: str = ""

    @property
    def label(self) -> str:
        """Return a short human name for the object, e.g. ``queue taskq.email``."""
        return describe(self.declared or self.live)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class LiveState:
    """The exchanges, queues and bindings a virtual host holds."""

    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]
    messages: Mapping[str, int]
    binding_keys: Mapping[Binding, str] = field(default_factory=dict)

    @classmethod
    def from_management(
        cls,
        exchanges: Iterable[Mapping[str, Any]],
        queues: Iterable[Mapping[str, Any]],
        bindings: Iterable[Mapping[str, Any]],
    ) -> LiveState:
        """Build the state from management API listings."""
        queue_list = list(queues)
        binding_list = [b for b in bindings if b["source"]]
        return cls(
            exchanges=tuple(
                _exchange(e) for e in exchanges if e["name"] and not _builtin(e["name"])
            ),
            queues=tuple(_queue(q) for q in queue_list),
            bindings=tuple(_binding(b) for b in binding_list),
            messages={str(q["name"]): int(q.get("messages") or 0) for q in queue_list},
            binding_keys={_binding(b): str(b.get("properties_key", "~")) for b in binding_list},
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything ``apply`` would do, object by object."""

    items: tuple[PlanItem, ...]

    def of(self, action: Action) -> tuple[PlanItem, ...]:
        """Return the items with ``action``."""
        return tuple(i for i in self.items if i.action is action)

    @property
    def in_sync(self) -> bool:
        """Return whether the broker holds exactly the declared topology."""
        return all(i.action is Action.MATCH for i in self.items)

    @property
    def exit_code(self) -> int:
        """Return 0 when in sync, 3 when anything conflicts, 2 for other differences."""
        if self.of(Action.CONFLICT):
            return 3
        return 0 if self.in_sync else 2


def make_plan(topology: CompiledTopology, live: LiveState) -> Plan:
    """Return what applying ``topology`` to a broker holding ``live`` would do."""
    ns = topology.namespace + "."
    items: list[PlanItem] = []
    live_ex = {e.name: e for e in live.exchanges}
    for exchange in topology.exchanges:
        items.append(_compare(exchange, live_ex.get(exchange.name), _exchange_hint))
    live_q = {q.name: q for q in live.queues}
    for queue in topology.queues:
        items.append(_compare(queue, live_q.get(queue.name), _queue_hint))
    live_b = set(live.bindings)
    for binding in topology.bindings:
        items.append(PlanItem(Action.MATCH if binding in live_b else Action.CREATE, binding, None))
    declared_names = {e.name for e in topology.exchanges} | {q.name for q in topology.queues}
    named: list[Exchange | Queue] = [*live.exchanges, *live.queues]
    for obj in named:
        if obj.name.startswith(ns) and obj.name not in declared_names:
            items.append(PlanItem(Action.EXTRA, None, obj, "not in the topology file"))
    declared_b = set(topology.bindings)
    for binding in live.bindings:
        if binding.source.startswith(ns) and binding not in declared_b:
            items.append(PlanItem(Action.EXTRA, None, binding, "not in the topology file"))
    return Plan(tuple(items))


def _compare(declared: Exchange | Queue, live: Exchange | Queue | None, hint: Any) -> PlanItem:
    if live is None:
        return PlanItem(Action.CREATE, declared, None)
    if live == declared:
        return PlanItem(Action.MATCH, declared, live)
    return PlanItem(Action.CONFLICT, declared, live, _difference(declared, live), hint(declared))


def _difference(declared: Exchange | Queue, live: Exchange | Queue) -> str:
    changes = []
    for attribute in declared.__slots__:
        if attribute in ("name", "arguments"):
            continue
        want, have = getattr(declared, attribute), getattr(live, attribute)
        if want != have:
            changes.append(f"{attribute}: broker has {have!r}, file wants {want!r}")
    want_args, have_args = dict(declared.arguments), dict(live.arguments)
    for key in sorted(want_args.keys() | have_args.keys()):
        if want_args.get(key) != have_args.get(key):
            have = have_args.get(key, "(unset)")
            want = want_args.get(key, "(unset)")
            changes.append(f"{key}: broker has {have!r}, file wants {want!r}")
    return "; ".join(changes)


def _queue_hint(queue: Queue) -> str:
    return (
        "RabbitMQ refuses to change a queue's arguments in place (PRECONDITION_FAILED). "
        f"If {queue.name} is empty, `taskctl topology apply --recreate {queue.name}` deletes and "
        "re-declares it; otherwise drain it first (or move its messages with a shovel) and then "
        "recreate it. TTL, length limits and dead-lettering can also be changed by a policy "
        "(rabbitmqctl set_policy) without re-declaring."
    )


def _exchange_hint(exchange: Exchange) -> str:
    return (
        "RabbitMQ refuses to change an exchange's type or flags in place. "
        f"`taskctl topology apply --recreate {exchange.name}` deletes it (its bindings go with it) "
        "and re-declares it with its bindings; publishes to it fail while that runs."
    )


def describe(obj: BrokerObject) -> str:
    """Return a short human name for a broker object."""
    if isinstance(obj, Exchange):
        return f"exchange {obj.name} ({obj.type})"
    if isinstance(obj, Queue):
        return f"queue {obj.name} ({obj.queue_type})"
    arrow = f"{obj.source} -> {obj.destination}"
    key = f" [{obj.routing_key}]" if obj.routing_key else ""
    extra = {k: v for k, v in obj.arguments if k != "x-match"}
    match = f" {extra}" if extra else ""
    return f"binding {arrow}{key}{match}"


def _builtin(name: str) -> bool:
    return name.startswith("amq.")


def _exchange(data: Mapping[str, Any]) -> Exchange:
    return Exchange(
        name=data["name"],
        type=data["type"],
        durable=bool(data.get("durable", True)),
        auto_delete=bool(data.get("auto_delete", False)),
        internal=bool(data.get("internal", False)),
        arguments=args(data.get("arguments") or {}),
    )


def _queue(data: Mapping[str, Any]) -> Queue:
    arguments = dict(data.get("arguments") or {})
    # A queue declared without x-queue-type still has a type; compare on what it really is.
    arguments.setdefault("x-queue-type", data.get("type", "classic"))
    return Queue(
        name=data["name"],
        durable=bool(data.get("durable", True)),
        auto_delete=bool(data.get("auto_delete", False)),
        arguments=args(arguments),
    )


def _binding(data: Mapping[str, Any]) -> Binding:
    return Binding(
        source=data["source"],
        destination=data["destination"],
        destination_type=data["destination_type"],
        routing_key=data.get("routing_key", ""),
        arguments=args(data.get("arguments") or {}),
    )


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
    async with await connect(settings, name="taskctl topology apply") as connection:
        channel = await connection.channel()
        try:
            await _declare_all(channel, topology, progress)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyConflictError(
                f"RabbitMQ refused a declaration: {exc}; run `taskctl topology plan` for details"
            ) from exc
        return server_info(connection)


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
