"""Plan and apply the topology on a live broker: compare, declare idempotently, refuse conflicts, delete on request."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, Literal, TypeVar

import aiormq

from topology.broker import connect
from topology.compiled import Binding, CompiledTopology, Exchange, Queue, args
from topology.errors import TopologyConflictError
from topology.management import ManagementClient
from topology.server import choices
from topology.settings import BrokerSettings

BrokerObject = Exchange | Queue | Binding
Progress = Callable[[str], None]
Obj = TypeVar("Obj", Exchange, Queue, Binding)


class Action(StrEnum):
    """What ``apply`` would do with one broker object."""

    CREATE = "create"
    MATCH = "match"
    CONFLICT = "conflict"
    EXTRA = "extra"


@dataclass(frozen=True, slots=True)
class PlanItem:
    """One broker object (as the file declares it, else as the broker holds it) and what ``apply`` would do with it."""

    action: Action
    obj: BrokerObject
    detail: str = ""
    hint: str = ""

    @property
    def label(self) -> str:
        """Return a short human name for the object, e.g. ``queue taskq.email``."""
        return describe(self.obj)


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
        binding_list = [(_parsed(Binding, b, {}), b) for b in bindings if b["source"]]
        return cls(
            exchanges=tuple(
                _parsed(Exchange, e, {})
                for e in exchanges
                if e["name"] and not e["name"].startswith("amq.")
            ),
            # A queue declared without x-queue-type still has a type; compare on what it really is.
            queues=tuple(
                _parsed(Queue, q, {"x-queue-type": q.get("type", "classic")}) for q in queue_list
            ),
            bindings=tuple(b for b, _ in binding_list),
            messages={str(q["name"]): int(q.get("messages") or 0) for q in queue_list},
            binding_keys={b: str(data.get("properties_key", "~")) for b, data in binding_list},
        )


def _parsed(kind: type[Obj], data: Mapping[str, Any], implied: Mapping[str, Any]) -> Obj:
    known = {f.name: data[f.name] for f in fields(kind) if f.name in data and f.name != "arguments"}
    return kind(**known, arguments=args({**implied, **(data.get("arguments") or {})}))


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything ``apply`` would do, object by object, and what the broker made it choose."""

    items: tuple[PlanItem, ...]
    choices: tuple[str, ...] = ()  # one line per quorum group (see ``topology.server.choices``)

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
    live_objects: list[Exchange | Queue] = [*live.exchanges, *live.queues]
    declared: list[Exchange | Queue] = [*topology.exchanges, *topology.queues]
    by_name = {(type(o), o.name): o for o in live_objects}
    items = [_compare(o, by_name.get((type(o), o.name))) for o in declared]
    live_b, declared_b = set(live.bindings), set(topology.bindings)
    items += [
        PlanItem(Action.MATCH if b in live_b else Action.CREATE, b) for b in topology.bindings
    ]
    ns, names = topology.namespace + ".", {o.name for o in declared}
    extra: list[BrokerObject] = [
        o for o in live_objects if o.name.startswith(ns) and o.name not in names
    ]
    extra += [b for b in live.bindings if b.source.startswith(ns) and b not in declared_b]
    items += [PlanItem(Action.EXTRA, o, "not in the topology file") for o in extra]
    return Plan(tuple(items))


def _compare(declared: Exchange | Queue, live: Exchange | Queue | None) -> PlanItem:
    if live is None or live == declared:
        return PlanItem(Action.CREATE if live is None else Action.MATCH, declared)
    flags = [f.name for f in fields(declared) if f.name not in ("name", "arguments")]
    pairs = [(k, getattr(live, k), getattr(declared, k)) for k in flags]
    have, want = dict(live.arguments), dict(declared.arguments)
    unset = "(unset)"
    pairs += [
        (k, have.get(k, unset), want.get(k, unset)) for k in sorted(have.keys() | want.keys())
    ]
    changes = [f"{k}: broker has {h!r}, file wants {w!r}" for k, h, w in pairs if h != w]
    return PlanItem(Action.CONFLICT, declared, "; ".join(changes), _hint(declared))


def _hint(obj: Exchange | Queue) -> str:
    if isinstance(obj, Exchange):
        return (
            "RabbitMQ refuses to change an exchange's type or flags in place. "
            f"`taskctl topology apply --recreate {obj.name}` deletes it (its bindings go with it) "
            "and re-declares it with its bindings; publishes to it fail while that runs."
        )
    return (
        "RabbitMQ refuses to change a queue's arguments in place (PRECONDITION_FAILED). "
        f"If {obj.name} is empty, `taskctl topology apply --recreate {obj.name}` deletes and "
        "re-declares it; otherwise drain it first (or move its messages with a shovel) and then "
        "recreate it. TTL, length limits and dead-lettering can also be changed by a policy "
        "(rabbitmqctl set_policy) without re-declaring."
    )


def describe(obj: BrokerObject) -> str:
    """Return a short human name for a broker object."""
    if isinstance(obj, Exchange):
        return f"exchange {obj.name} ({obj.type})"
    if isinstance(obj, Queue):
        return f"queue {obj.name} ({obj.queue_type})"
    key = f" [{obj.routing_key}]" if obj.routing_key else ""
    extra = {k: v for k, v in obj.arguments if k != "x-match"}
    return f"binding {obj.source} -> {obj.destination}{key}{f' {extra}' if extra else ''}"


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What ``apply`` found before and after declaring."""

    server: str  # the product and version the broker names, e.g. ``RabbitMQ 3.10.8``
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
        await client.listing(vhost, "exchanges"),
        await client.listing(vhost, "queues"),
        await client.listing(vhost, "bindings"),
    )


async def plan_topology(topology: CompiledTopology, settings: BrokerSettings) -> Plan:
    """Return what applying ``topology`` would change on the broker of ``settings``."""
    async with ManagementClient(settings) as client:
        chosen = choices(topology, await client.server())  # refuses a broker too old first
        return replace(make_plan(topology, await read_live(client, settings.vhost)), choices=chosen)


async def apply_topology(
    topology: CompiledTopology,
    settings: BrokerSettings,
    *,
    recreate: Collection[str] = (),
    prune: bool = False,
    progress: Progress = lambda _: None,
) -> ApplyReport:
    """Declare ``topology`` on the broker, refusing conflicts; never delete unless ``recreate``/``prune`` ask."""
    before = await plan_topology(topology, settings)
    async with ManagementClient(settings) as client:
        conflicts = before.of(Action.CONFLICT)
        refused = Plan(tuple(i for i in conflicts if getattr(i.obj, "name", None) not in recreate))
        if refused.items:
            raise TopologyConflictError(conflict_message(refused))
        doomed = [i.obj for i in (*conflicts, *(before.of(Action.EXTRA) if prune else ()))]
        deleted = await _delete(client, settings.vhost, doomed, progress)
        server = await declare(topology, settings, progress=progress)
        after = make_plan(topology, await read_live(client, settings.vhost))
    return ApplyReport(server, before, after, deleted)


def conflict_message(plan: Plan) -> str:
    """Return the text that explains every conflict in ``plan`` and how to migrate."""
    lines = ["the broker holds declarations that differ from the topology file:"]
    for item in plan.of(Action.CONFLICT):
        lines += [f"  {item.label}: {item.detail}", f"    hint: {item.hint}"]
    return "\n".join(lines)


async def _delete(
    client: ManagementClient, vhost: str, doomed: list[BrokerObject], progress: Progress
) -> tuple[str, ...]:
    # Refuse before deleting anything, so a refusal leaves the broker untouched.
    live = await read_live(client, vhost)
    for obj in doomed:
        if isinstance(obj, Queue) and live.messages.get(obj.name, 0):
            raise TopologyConflictError(
                f"queue {obj.name} holds {live.messages[obj.name]} messages; drain it (or move "
                "them with a shovel) before recreating or pruning it"
            )
    # Bindings first: deleting a queue or exchange takes its bindings with it.
    gone = {o.name for o in doomed if not isinstance(o, Binding)}
    deleted = []
    for obj in sorted(doomed, key=lambda o: not isinstance(o, Binding)):
        if isinstance(obj, Binding):
            if obj.destination in gone:
                continue
            key = live.binding_keys.get(obj, "~")
            await client.delete_binding(
                vhost, obj.source, obj.destination, obj.destination_type, key
            )
            deleted.append(describe(obj))
        else:
            kind: Literal["queue", "exchange"] = "queue" if isinstance(obj, Queue) else "exchange"
            await client.delete(vhost, kind, obj.name)
            deleted.append(f"{kind} {obj.name}")
        progress(f"deleted {deleted[-1]}")
    return tuple(deleted)


async def declare(
    topology: CompiledTopology, settings: BrokerSettings, *, progress: Progress = lambda _: None
) -> str:
    """Declare every exchange, queue and binding over AMQP (idempotent); return the broker's product and version."""
    async with await connect(settings, name="taskctl topology apply") as connection:
        # The AMQP channel itself: one method per declaration, nothing for aio-pika to restore.
        channel = await (await connection.channel()).get_underlay_channel()
        try:
            for e in topology.exchanges:
                await channel.exchange_declare(
                    e.name,
                    exchange_type=e.type,
                    durable=e.durable,
                    auto_delete=e.auto_delete,
                    internal=e.internal,
                    arguments=dict(e.arguments),
                )
            progress(f"declared {len(topology.exchanges)} exchanges")
            for q in topology.queues:
                await channel.queue_declare(
                    q.name,
                    durable=q.durable,
                    auto_delete=q.auto_delete,
                    arguments=dict(q.arguments),
                )
            progress(f"declared {len(topology.queues)} queues")
            for b in topology.bindings:
                bind = (
                    channel.queue_bind if b.destination_type == "queue" else channel.exchange_bind
                )
                await bind(b.destination, b.source, b.routing_key, arguments=dict(b.arguments))
            progress(f"declared {len(topology.bindings)} bindings")
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TopologyConflictError(
                f"RabbitMQ refused a declaration: {exc}; run `taskctl topology plan` for details"
            ) from exc
        props = connection.transport.connection.server_properties if connection.transport else {}
        return f"{props.get('product', 'unknown')!s} {props.get('version', 'unknown')!s}"
