"""``InMemoryPublisher``: the ``Publisher`` port without a broker, for fast unit tests.

It routes as the compiled topology does on RabbitMQ; a contract test runs the same
assertions against it and against ``ConfirmedPublisher`` on the real broker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from topology import names
from topology.compiled import CompiledTopology
from topology.envelope import Envelope
from topology.errors import TaskqError, UnroutableError
from topology.routes import Route, job_route


@dataclass(frozen=True, slots=True)
class Published:
    """One confirmed publish as the fake saw it."""

    envelope: Envelope
    route: Route
    queue: str


class InMemoryPublisher:
    """Records every publish and the queue the topology would deliver it to."""

    def __init__(self, topology: CompiledTopology) -> None:
        self._topology = topology
        self.published: list[Published] = []
        self.queues: dict[str, list[Envelope]] = defaultdict(list)
        self.events: list[tuple[str, bytes]] = []
        self.fail_with: TaskqError | None = None

    async def publish(self, envelope: Envelope, route: Route | None = None) -> None:
        """Record ``envelope`` in the queue it would reach.

        Raises:
            UnroutableError: when no queue of the topology would receive it.
        """
        if self.fail_with is not None:
            raise self.fail_with
        target = route or job_route(self._topology, envelope)
        queue = self._destination(envelope, target)
        if queue is None:
            raise UnroutableError(
                f"no queue is bound for exchange {target.exchange!r}, "
                f"routing key {target.routing_key!r}; is the job type in the topology?"
            )
        self.published.append(Published(envelope, target, queue))
        self.queues[queue].append(envelope)

    async def publish_many(
        self, envelopes: Sequence[Envelope], routes: Sequence[Route] | None = None
    ) -> list[TaskqError | None]:
        """Publish each envelope; one result per envelope, as ``ConfirmedPublisher`` returns."""
        results: list[TaskqError | None] = []
        for i, envelope in enumerate(envelopes):
            try:
                await self.publish(envelope, routes[i] if routes is not None else None)
            except TaskqError as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Record status events."""
        if self.fail_with is not None:
            raise self.fail_with
        self.events.extend(events)

    def _destination(self, envelope: Envelope, route: Route) -> str | None:
        topology = self._topology
        if route.exchange == topology.jobs_exchange:
            group = topology.group_for(route.routing_key)
            return None if group is None else group.work_queues[envelope.priority]
        if route.exchange == topology.retry_exchange:
            label = route.headers.get(names.DELAY_HEADER)
            return next((t.queue for t in topology.tiers if t.label == label), None)
        if route.exchange == topology.dead_letter_exchange:
            known = {g.name: g.dead_letter_queue for g in topology.groups}
            return known.get(route.routing_key)
        return None
