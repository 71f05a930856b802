"""Compare the declared topology with the live broker: what to create, what matches, what conflicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from topology.model import Binding, CompiledTopology, Exchange, Queue, args


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
