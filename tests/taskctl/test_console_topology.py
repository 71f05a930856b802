"""The topology drawing: every declared object once, edges for bindings and dead-letter routes, drift marked."""

from __future__ import annotations

from itertools import pairwise

from taskctl.console.topology_graph import ROW, diagram
from topology.apply import Action, Plan, PlanItem
from topology.compiled import CompiledTopology


def test_every_exchange_and_queue_is_drawn_once_without_overlaps(topology: CompiledTopology):
    drawn = diagram(topology, None)
    names = [(n.kind, n.name) for n in drawn.nodes]
    declared = [("exchange", e.name) for e in topology.exchanges]
    declared += [("queue", q.name) for q in topology.queues]
    assert sorted(names) == sorted(declared)
    assert all(n.drift is None for n in drawn.nodes)
    for column in {n.x for n in drawn.nodes}:
        heights = sorted(n.y for n in drawn.nodes if n.x == column)
        assert all(b - a >= ROW for a, b in pairwise(heights))
    assert all(0 <= n.x < drawn.width and 0 <= n.y < drawn.height for n in drawn.nodes)
    routed = [q for q in topology.queues if dict(q.arguments).get("x-dead-letter-exchange")]
    assert len(drawn.edges) == len(topology.bindings) + len(routed)
    kinds = {e.kind for e in drawn.edges}
    assert kinds == {"binding", "dead-letter", "expires"}
    assert drawn.differences == []


def test_a_plans_differences_are_marked_on_their_nodes_and_edges(topology: CompiledTopology):
    queue, binding = topology.queues[0], topology.bindings[0]
    plan = Plan(
        (
            PlanItem(Action.CONFLICT, queue, "x-max-priority differs"),
            PlanItem(Action.CREATE, binding),
            *(PlanItem(Action.MATCH, q) for q in topology.queues[1:]),
        )
    )
    drawn = diagram(topology, plan)
    marked = {n.name: n.drift for n in drawn.nodes if n.drift}
    assert marked == {queue.name: "conflict"}
    assert [e.drift for e in drawn.edges].count(True) == 1
    assert drawn.edges[0].drift
    assert [i.action for i in drawn.differences] == [Action.CONFLICT, Action.CREATE]
