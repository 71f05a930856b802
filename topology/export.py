"""Export the topology as RabbitMQ definitions JSON (``rabbitmqctl import_definitions``)."""

from __future__ import annotations

from typing import Any

from topology.model import CompiledTopology


def export_definitions(topology: CompiledTopology, *, vhost: str = "/") -> dict[str, Any]:
    """Return definitions that declare exactly the exchanges, queues and bindings of ``topology``."""
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type,
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": dict(e.arguments),
            }
            for e in topology.exchanges
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": vhost,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": dict(q.arguments),
            }
            for q in topology.queues
        ],
        "bindings": [
            {
                "source": b.source,
                "vhost": vhost,
                "destination": b.destination,
                "destination_type": b.destination_type,
                "routing_key": b.routing_key,
                "arguments": dict(b.arguments),
            }
            for b in topology.bindings
        ],
    }
