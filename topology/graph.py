"""Draw the topology as a Mermaid flowchart of exchanges, queues and bindings."""

from __future__ import annotations

import re

from topology.model import CompiledTopology


def mermaid(topology: CompiledTopology) -> str:
    """Return a Mermaid ``flowchart LR`` of every exchange, queue and binding."""
    lines = ["flowchart LR"]
    for exchange in topology.exchanges:
        lines.append(f'  {_id(exchange.name)}{{{{"{exchange.name}<br/><i>{exchange.type}</i>"}}}}')
    for queue in topology.queues:
        extra = dict(queue.arguments)
        notes = [queue.queue_type]
        if "x-max-priority" in extra:
            notes.append(f"priority 0-{extra['x-max-priority']}")
        if "x-message-ttl" in extra and queue.name.startswith(f"{topology.namespace}.delay."):
            notes.append(f"TTL {extra['x-message-ttl']}ms")
        lines.append(f'  {_id(queue.name)}[("{queue.name}<br/><i>{", ".join(notes)}</i>")]')
    for binding in topology.bindings:
        label = binding.routing_key or ", ".join(
            f"{k}={v}" for k, v in binding.arguments if k != "x-match"
        )
        edge = f' -- "{label}" --> ' if label else " --> "
        lines.append(f"  {_id(binding.source)}{edge}{_id(binding.destination)}")
    for queue in topology.queues:
        dlx = dict(queue.arguments).get("x-dead-letter-exchange")
        if dlx:
            kind = "expires" if "x-message-ttl" in dict(queue.arguments) else "dead letters"
            lines.append(f'  {_id(queue.name)} -. "{kind}" .-> {_id(str(dlx))}')
    return "\n".join(lines) + "\n"


def _id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)
