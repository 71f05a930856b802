"""Open what every producer needs from its settings: the compiled topology, job store and blob store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry

from jobstore.blobs import BlobStore, open_blob_store
from jobstore.model import JobStore, open_store
from producers.metrics import ProducerMetrics
from producers.publisher import ConfirmedPublisher, Publisher
from producers.submit import Submitter
from topology.compiled import CompiledTopology, compile_topology
from topology.loader import load_topology, topology_path
from topology.sealing import Sealer
from topology.settings import Settings


@dataclass(frozen=True, slots=True)
class Backends:
    """Everything a ``Submitter`` needs besides its publisher, built one way for every caller."""

    settings: Settings
    topology: CompiledTopology
    store: JobStore
    blobs: BlobStore
    metrics: ProducerMetrics  # the submitter's and its publisher's
    sealer: Sealer  # seals payloads and results at rest (no keys: they stay clear)

    async def close(self) -> None:
        """Close the job store and the blob store."""
        try:
            await self.store.close()
        finally:
            await self.blobs.close()


async def open_backends(settings: Settings, registry: CollectorRegistry | None = None) -> Backends:
    """Read the topology, open and migrate the job store, open the blob store; metrics on ``registry``."""
    where = settings.locations
    sealer = settings.encryption.sealer()  # a bad key file fails before anything opens
    topology = compile_topology(
        load_topology(topology_path(where)), poison_deliveries=settings.worker.poison_deliveries
    )
    azure_key = where.azure_storage_key
    blobs = open_blob_store(
        where.blob_url,
        endpoint_url=where.s3_endpoint_url or None,
        region=where.s3_region,
        cloud_endpoint_url=where.blob_endpoint_url or None,
        azure_key=azure_key.get_secret_value() if azure_key else None,
    )
    store = open_store(where.store_url)
    backends = Backends(settings, topology, store, blobs, ProducerMetrics(registry), sealer)
    try:
        await backends.store.migrate()
    except BaseException:
        await backends.close()
        raise
    return backends


class ClosingPublisher(Publisher, Protocol):
    """A publisher its opener owns, and closes with the rest."""

    async def close(self) -> None:
        """Close the broker connection."""
        ...


P = TypeVar("P", bound=ClosingPublisher)


@dataclass(frozen=True, slots=True)
class Producer(Generic[P]):
    """A submitter with the backends and the publisher it owns: what the API, workers and clients submit with."""

    backends: Backends
    publisher: P
    submitter: Submitter

    async def close(self) -> None:
        """Close the submitter, the publisher and the backends."""
        try:
            await self.submitter.close()
            await self.publisher.close()
        finally:
            await self.backends.close()


async def open_producer(
    settings: Settings,
    connect: Callable[[Backends], Awaitable[P]],
    registry: CollectorRegistry | None = None,
) -> Producer[P]:
    """Open the backends, a publisher on them (``connect``) and a submitter; close all on failure."""
    backends = await open_backends(settings, registry)
    try:
        publisher = await connect(backends)
    except BaseException:
        await backends.close()
        raise
    submitter = Submitter(
        backends.topology,
        publisher,
        backends.store,
        backends.blobs,
        settings.submit,
        metrics=backends.metrics,
        sealer=backends.sealer,
    )
    return Producer(backends, publisher, submitter)


def transport(
    connect: Callable[..., Awaitable[P]], name: str
) -> Callable[[Backends], Awaitable[P]]:
    """Return the ``connect`` of ``open_producer`` that opens a publisher with ``connect``, named ``name``."""

    async def opened(backends: Backends) -> P:
        settings = backends.settings
        return await connect(
            settings.broker,
            backends.topology,
            settings.publisher,
            name=name,
            metrics=backends.metrics,
        )

    return opened


def confirmed(name: str) -> Callable[[Backends], Awaitable[ConfirmedPublisher]]:
    """Return the ``connect`` of ``open_producer`` that opens a confirmed aio-pika publisher."""
    return transport(ConfirmedPublisher.connect, name)
