"""Build real services from ``TASKQ_*`` settings: broker, job store, blob store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from producers.api.app import Services
from producers.api.hub import EventHub
from producers.auth.authenticator import open_authenticator
from producers.auth.settings import AuthSettings
from producers.backends import open_backends
from producers.publisher import ConfirmedPublisher
from producers.submit import Submitter
from topology.errors import BrokerUnavailableError
from topology.settings import load_settings


async def build_services(environ: Mapping[str, str] | None = None) -> Services:
    """Connect to the broker, open and migrate the job store, open the blob store.

    Raises:
        SettingsError, TopologyFileError: bad configuration (the process should not start).
        BrokerUnavailableError, StoreUnavailableError: a dependency is down at start-up.
    """
    auth = load_settings(AuthSettings, environ)  # bad settings stop the start before any I/O
    backends = await open_backends(environ)
    try:
        authenticator = open_authenticator(backends.store, auth)
        publisher = await ConfirmedPublisher.connect(
            backends.broker, backends.topology, backends.publisher, name="taskq api"
        )
    except BaseException:
        await backends.close()
        raise

    submitter = Submitter(
        backends.topology, publisher, backends.store, backends.blobs, backends.submit
    )
    # Jobs whose submitter stopped between storing and the confirm are published again here.
    repairs = asyncio.create_task(submitter.keep_repairing())

    async def close() -> None:
        repairs.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await repairs
        try:
            await submitter.close()
            await publisher.close()
        finally:
            await backends.close()

    hub = EventHub()
    try:
        await hub.attach(publisher.connection, backends.topology)
    except BaseException:
        await close()
        raise

    async def ready() -> None:
        if not publisher.connected:
            raise BrokerUnavailableError("the connection to RabbitMQ is down (reconnecting)")

    return Services(submitter, hub, ready, close, publisher, authenticator)
