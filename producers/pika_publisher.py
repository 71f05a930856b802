"""``PikaPublisher``: the ``Publisher`` port over pika's blocking connection, for ``SyncClient``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any, Final

import pika
import pika.credentials
import pika.exceptions

from producers.metrics import ProducerMetrics, exchange_kind
from producers.publisher import translate
from telemetry.redaction import mask_url
from topology.broker import unreachable
from topology.closing import AsyncClosing
from topology.compiled import CompiledTopology
from topology.envelope import Envelope
from topology.errors import BrokerUnavailableError, TaskqError
from topology.routes import Route, job_route
from topology.settings import BrokerSettings, PublisherSettings
from topology.tls import broker_context

# "The broker is not there right now": ConnectionClosed, StreamLostError and
# ConnectionWrongStateError are all AMQPConnectionError subclasses.
_CONNECTION_ERRORS: Final = (pika.exceptions.AMQPConnectionError, OSError)
_PIKA_ERRORS: Final = (pika.exceptions.AMQPError, OSError)


class PikaPublisher(AsyncClosing):
    """Publishes persistent, mandatory messages with confirms over a pika ``BlockingConnection``."""

    # ``async`` only to fit the ``Publisher`` port: each call blocks the thread until the broker
    # answers, which suits ``SyncClient``'s private loop and no loop that serves other work.

    def __init__(
        self, parameters: Any, url: str, topology: CompiledTopology, metrics: ProducerMetrics
    ) -> None:
        self._parameters = parameters
        self._url = url  # the broker's URL without its password, for errors
        self._topology = topology
        self._metrics = metrics
        self._connection: Any = None
        self._channel: Any = None
        self._closed = False

    @classmethod
    async def connect(
        cls,
        broker: BrokerSettings,
        topology: CompiledTopology,
        settings: PublisherSettings | None = None,
        *,
        name: str = "taskq sync client",
        metrics: ProducerMetrics | None = None,
    ) -> PikaPublisher:
        """Open the connection and its confirm channel now, so a bad URL fails at start-up."""
        url = mask_url(broker.amqp_url.get_secret_value())
        parameters = _parameters(broker, settings or PublisherSettings(), name)
        publisher = cls(parameters, url, topology, metrics or ProducerMetrics())
        publisher._live_channel()
        return publisher

    async def close(self) -> None:
        """Close the connection; later publishes raise ``BrokerUnavailableError``."""
        self._closed = True
        self._drop()

    async def publish(self, envelope: Envelope, route: Route | None = None) -> None:
        """Publish ``envelope`` and return once the broker confirmed it."""
        target = route or job_route(self._topology, envelope)
        began = time.perf_counter()
        self._send(target, envelope.encode(), _properties(envelope, target), mandatory=True)
        kind = exchange_kind(self._topology, target.exchange)
        self._metrics.confirm_seconds.labels(kind).observe(time.perf_counter() - began)

    async def publish_many(
        self, envelopes: Sequence[Envelope], routes: Sequence[Route] | None = None
    ) -> list[TaskqError | None]:
        """Publish the envelopes one confirm round trip at a time; one result per envelope."""
        targets: Sequence[Route | None] = routes if routes is not None else [None] * len(envelopes)
        results: list[TaskqError | None] = []
        down: BrokerUnavailableError | None = None
        for envelope, route in zip(envelopes, targets, strict=True):
            if down is not None:
                # Reconnecting once per remaining message would cost a connect timeout each.
                results.append(BrokerUnavailableError(f"not published: {down}"))
                continue
            try:
                await self.publish(envelope, route)
                results.append(None)
            except TaskqError as exc:
                results.append(exc)
                down = exc if isinstance(exc, BrokerUnavailableError) else None
        return results

    async def publish_events(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Publish status events (transient, not mandatory: it is fine if nobody listens)."""
        properties = pika.BasicProperties(content_type="application/json", delivery_mode=1)
        for routing_key, body in events:
            route = Route(self._topology.events_exchange, routing_key)
            self._send(route, body, properties, mandatory=False)

    def _send(self, route: Route, body: bytes, properties: Any, *, mandatory: bool) -> None:
        channel = self._live_channel()
        try:
            channel.basic_publish(
                route.exchange, route.routing_key, body, properties, mandatory=mandatory
            )
        except _PIKA_ERRORS as exc:
            if isinstance(exc, _CONNECTION_ERRORS):
                self._drop()
            elif isinstance(exc, pika.exceptions.NackError):
                # The next publish opens a new channel (see ``ConfirmedPublisher._renew``).
                self._channel = None
                if channel.is_open:
                    with contextlib.suppress(*_PIKA_ERRORS):
                        channel.close()
            # A channel the broker closed (404 and the like) is reopened by _live_channel.
            raise translate(exc, route) from exc

    def _live_channel(self) -> Any:
        """Return the open confirm channel, reconnecting once if the connection went away."""
        if self._closed:
            raise BrokerUnavailableError("the publisher is closed")
        if self._connection is not None and not self._alive():
            self._drop()
        try:
            if self._connection is None:
                self._connection = pika.BlockingConnection(self._parameters)
            if self._channel is None or not self._channel.is_open:
                self._channel = self._connection.channel()
                self._channel.confirm_delivery()
        except _PIKA_ERRORS as exc:
            self._drop()
            raise unreachable(self._url, exc) from exc
        return self._channel

    def _alive(self) -> bool:
        """Return whether the connection still works, reading what the broker sent meanwhile."""
        # pika only talks to the broker inside its calls, so an idle client learns here, before
        # publishing, that the broker closed the connection (for instance on missed heartbeats).
        try:
            self._connection.process_data_events(time_limit=0)
        except _PIKA_ERRORS:
            return False
        return bool(self._connection.is_open)

    def _drop(self) -> None:
        """Forget the connection and its channel, closing them if they are still open."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(*_PIKA_ERRORS):
                connection.close()


def _parameters(broker: BrokerSettings, settings: PublisherSettings, name: str) -> list[Any]:
    """Return the connection parameters of each broker node, tried in turn (the URL's node first)."""
    nodes = []
    for host, port in broker.addresses:
        parameters = pika.URLParameters(broker.amqp_url.get_secret_value())
        parameters.host, parameters.port = host, port
        parameters.heartbeat = broker.heartbeat
        parameters.connection_attempts = 1
        parameters.socket_timeout = broker.connect_timeout
        parameters.stack_timeout = broker.connect_timeout
        # A broker in a resource alarm blocks publishers and withholds confirms; give up when
        # ConfirmedPublisher would stop waiting for a confirm.
        parameters.blocked_connection_timeout = settings.confirm_timeout
        parameters.client_properties = {"connection_name": name}
        if parameters.ssl_options is not None:  # amqps://: verified as topology.broker does
            parameters.ssl_options = pika.SSLOptions(broker_context(broker), host)
        if broker.broker_sasl_external:
            parameters.credentials = pika.credentials.ExternalCredentials()
        nodes.append(parameters)
    return nodes


def _properties(envelope: Envelope, route: Route) -> Any:
    """Return the pika properties ``ConfirmedPublisher`` sends for ``envelope`` on ``route``."""
    props = envelope.properties()
    return pika.BasicProperties(
        content_type=props.content_type,
        delivery_mode=props.delivery_mode,
        priority=props.priority,
        correlation_id=props.correlation_id,
        message_id=props.message_id,
        # pamqp (under aio-pika) encodes a datetime as int(dt.timestamp()): truncated seconds.
        timestamp=int(props.timestamp.timestamp()),
        type=props.type,
        headers={**props.headers, **route.headers},
    )
