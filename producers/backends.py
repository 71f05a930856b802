"""Open what every producer needs from ``TASKQ_*`` settings: topology, job store, blob store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from jobstore.blobs import BlobStore, open_blob_store
from jobstore.factory import open_store
from jobstore.model import JobStore
from producers.settings import PublisherSettings, SubmitSettings
from topology.compiler import compile_topology
from topology.loader import load_topology, topology_path
from topology.model import CompiledTopology
from topology.settings import BrokerSettings, load_settings


@dataclass(frozen=True, slots=True)
class Backends:
    """Everything a ``Submitter`` needs besides its publisher, built one way for every caller."""

    topology: CompiledTopology
    broker: BrokerSettings
    publisher: PublisherSettings
    submit: SubmitSettings
    store: JobStore
    blobs: BlobStore

    async def close(self) -> None:
        """Close the job store and the blob store."""
        try:
            await self.store.close()
        finally:
            await self.blobs.close()


async def open_backends(environ: Mapping[str, str] | None = None) -> Backends:
    """Read the settings and topology, open and migrate the job store, open the blob store.

    Raises:
        SettingsError, TopologyFileError: bad configuration (the process should not start).
        StoreUnavailableError: the job store is down at start-up.
    """
    env = os.environ if environ is None else environ
    topology = compile_topology(load_topology(topology_path(env)))
    broker = load_settings(BrokerSettings, env)
    publisher = load_settings(PublisherSettings, env)
    submit = load_settings(SubmitSettings, env)
    blobs = open_blob_store(
        submit.blob_url,
        endpoint_url=env.get("TASKQ_S3_ENDPOINT_URL") or None,
        region=env.get("TASKQ_S3_REGION") or "us-east-1",
        # The standard AWS variables, read from the same mapping as every other setting (None
        # lets boto3 fall back to its own chain: profiles, instance roles, web identity).
        access_key=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
    )
    store = open_store(submit.store_url)
    backends = Backends(topology, broker, publisher, submit, store, blobs)
    try:
        await store.migrate()
    except BaseException:
        await backends.close()
        raise
    return backends
