"""The topology as a drawing: exchanges and queues in columns, bindings as edges, drift marked."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response

from taskctl.console.web import Visit
from topology.apply import Action, Plan, PlanItem, plan_topology
from topology.compiled import Binding, CompiledTopology, Exchange, Queue
from topology.errors import TaskqError
from topology.settings import BrokerSettings

NODE_W, NODE_H = 250, 26  # a node's box, in SVG units (pixels at 100%)
ROW, COLUMN, MARGIN = 34, 360, 10  # the pitch of rows and columns, and the space around


@dataclass(frozen=True, slots=True)
class Node:
    """An exchange or queue, where it is drawn, and how it differs from the broker (if it does)."""

    name: str
    kind: str  # exchange | queue
    note: str  # its type, and what its arguments make it (priority, TTL, dead-lettering)
    x: int
    y: int
    drift: str | None  # create (missing on the broker) or conflict (declared otherwise there)


@dataclass(frozen=True, slots=True)
class Edge:
    """A binding (solid) or a dead-letter or expiry route (dashed), as one SVG path."""

    path: str
    kind: str  # binding | dead-letter | expires
    label: str
    drift: bool  # a binding the broker lacks


@dataclass(frozen=True, slots=True)
class Diagram:
    """Everything the topology page draws, and the broker objects the file does not declare."""

    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    differences: list[PlanItem]  # every plan item that is not a match, extra objects too


def _note(obj: Exchange | Queue) -> str:
    if isinstance(obj, Exchange):
        return obj.type
    arguments = dict(obj.arguments)
    notes = [obj.queue_type]
    if "x-max-priority" in arguments:
        notes.append(f"priority 0-{arguments['x-max-priority']}")
    if "x-message-ttl" in arguments:
        notes.append(f"TTL {arguments['x-message-ttl']} ms")
    return ", ".join(notes)


def _columns(topology: CompiledTopology) -> dict[str, int]:
    """Return each exchange's column: one right of any exchange bound to it."""
    column = {e.name: 0 for e in topology.exchanges}
    chained = [b for b in topology.bindings if b.destination_type == "exchange"]
    for _ in topology.exchanges:  # a longest path has at most this many hops
        for b in chained:
            column[b.destination] = max(column[b.destination], column.get(b.source, 0) + 1)
    return column


def _curve(x1: int, y1: int, x2: int, y2: int) -> str:
    bend = max(40, abs(x2 - x1) // 3)
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"


def diagram(topology: CompiledTopology, plan: Plan | None) -> Diagram:
    """Return the drawing of ``topology``, with ``plan``'s differences marked (``None``: unknown)."""
    items = plan.items if plan is not None else ()
    differences = [i for i in items if i.action is not Action.MATCH]
    drift = {(type(i.obj), getattr(i.obj, "name", "")): i.action.value for i in differences}
    missing = {i.obj for i in items if isinstance(i.obj, Binding) and i.action is Action.CREATE}
    column = _columns(topology)
    queue_column = max(column.values(), default=0) + 1
    at: dict[tuple[type, str], tuple[int, int]] = {}
    for row, queue in enumerate(topology.queues):
        at[(Queue, queue.name)] = (MARGIN + queue_column * COLUMN, MARGIN + row * ROW)
    # Right to left, each exchange level with the middle of what it feeds, so edges run short.
    for index in reversed(range(queue_column)):
        level = [e for e in topology.exchanges if column[e.name] == index]
        wanted = {e.name: _middle(e.name, topology.bindings, at) for e in level}
        y = MARGIN - ROW
        for exchange in sorted(level, key=lambda e: wanted[e.name]):
            y = max(wanted[exchange.name], y + ROW)  # never on top of the one above
            at[(Exchange, exchange.name)] = (MARGIN + index * COLUMN, y)
    nodes = []
    drawn: list[Exchange | Queue] = [*topology.exchanges, *topology.queues]
    for obj in drawn:
        key: tuple[type, str] = (type(obj), obj.name)
        nodes.append(Node(obj.name, key[0].__name__.lower(), _note(obj), *at[key], drift.get(key)))
    edges = [_binding(b, at, b in missing) for b in topology.bindings]
    edges += _dead_letter_routes(topology, at)
    width = 2 * MARGIN + queue_column * COLUMN + NODE_W
    height = MARGIN + max(y for _, y in at.values()) + NODE_H
    return Diagram(nodes, edges, width, height, differences)


def _middle(
    exchange: str, bindings: tuple[Binding, ...], at: dict[tuple[type, str], tuple[int, int]]
) -> int:
    """Return the middle height of what ``exchange`` is bound to (placed already), else the top."""
    ys = [
        at[key][1]
        for b in bindings
        if b.source == exchange
        and (key := (Exchange if b.destination_type == "exchange" else Queue, b.destination)) in at
    ]
    return (min(ys) + max(ys)) // 2 if ys else MARGIN


def _binding(b: Binding, at: dict[tuple[type, str], tuple[int, int]], drift: bool) -> Edge:
    x1, y1 = at[(Exchange, b.source)]
    target = Exchange if b.destination_type == "exchange" else Queue
    x2, y2 = at[(target, b.destination)]
    label = b.routing_key or ", ".join(f"{k}={v}" for k, v in b.arguments if k != "x-match")
    path = _curve(x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2)
    return Edge(path, "binding", f"{b.source} → {b.destination}: {label or 'every message'}", drift)


def _dead_letter_routes(
    topology: CompiledTopology, at: dict[tuple[type, str], tuple[int, int]]
) -> list[Edge]:
    """Return a dashed edge from each queue to the exchange its rejected or expired messages go to."""
    edges = []
    for queue in topology.queues:
        arguments = dict(queue.arguments)
        target = arguments.get("x-dead-letter-exchange")
        if not isinstance(target, str) or (Exchange, target) not in at:
            continue
        kind = "expires" if "x-message-ttl" in arguments else "dead-letter"
        qx, qy = at[(Queue, queue.name)]
        ex, ey = at[(Exchange, target)]
        # Back to the left: from the queue's left side to the exchange's lower edge.
        path = f"M{qx},{qy + NODE_H // 2} C{qx - 120},{qy + NODE_H // 2} {ex + NODE_W // 2},{ey + NODE_H + 60} {ex + NODE_W // 2},{ey + NODE_H}"
        verb = "expired messages return to" if kind == "expires" else "rejected messages go to"
        edges.append(Edge(path, kind, f"{queue.name}: {verb} {target}", False))
    return edges


async def topology_page(broker: BrokerSettings, visit: Visit) -> Response:
    """Draw the declared topology with the broker's drift marked (a plan, read live)."""
    topology = visit.services.submitter.topology
    try:
        plan: Plan | None = await plan_topology(topology, broker)
        problem = None
    except TaskqError as exc:
        plan, problem = None, f"the broker's declarations are unavailable: {exc}"
    drawn = diagram(topology, plan)
    return visit.page(
        "topology.html",
        diagram=drawn,
        problem=problem,
        in_sync=plan is not None and plan.in_sync,
    )
