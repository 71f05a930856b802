"""Run the pipeline on one machine: each handled group's workers and stream source's readers, scaled by the autoscaler, and extras."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from loguru import logger

from consumers.autoscaler.loop import Actuator, Autoscaler
from consumers.autoscaler.signals import SignalReader, StreamSignalReader, stream_target
from producers.auth.authenticator import open_authenticator
from producers.streams.source import open_redis
from taskctl.admin_key import ensure_admin_key, key_path
from taskctl.assembly import handled_groups, signalled
from taskctl.context import compiled_topology, job_store
from taskctl.supervisor import LocalScaler, ProcessSpec, Supervisor, child_argv, scaled_spec
from topology.apply import apply_topology
from topology.compiled import CompiledTopology
from topology.errors import SettingsError
from topology.settings import Settings, load_settings


async def up(path: Path | None, *, grace: float) -> int:
    """Apply the topology, make the admin key, then run the API and the workers until stopped."""
    settings = load_settings()
    api, scaling = settings.api, settings.autoscaler
    # Refused before anything starts: a taken port would otherwise fail in a child, again and again.
    refuse_taken_port(api.host, api.port, "TASKQ_PORT")
    if scaling.autoscale:
        refuse_taken_port(scaling.autoscaler_host, scaling.autoscaler_port, "TASKQ_AUTOSCALER_PORT")
    if settings.grpc.grpc:
        refuse_taken_port(settings.grpc.grpc_host, settings.grpc.grpc_port, "TASKQ_GRPC_PORT")
    topology = compiled_topology(path)
    report = await apply_topology(topology, settings.broker)
    applied = (report.server, settings.broker.describe(), report.summary())
    logger.info("{}: topology applied to {}: {}", *applied)
    for line in report.before.choices:
        logger.info("{}", line)
    async with job_store() as store:
        await ensure_admin_key(store, key_path(settings.locations), settings.auth)
    processes = [ProcessSpec("api", child_argv("serve"))]
    if topology.schedules:
        processes.append(ProcessSpec("scheduler", child_argv("scheduler")))
    return await supervise(topology, settings, processes, grace=grace, streams=True)


def refuse_taken_port(host: str, port: int, setting: str) -> None:
    """Raise ``SettingsError`` unless a server could listen on ``host``:``port`` now."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind) as probe:
            # As the servers themselves do: a port only lingering after a closed connection is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise SettingsError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; another taskctl up may be "
            f"running, or choose another port with {setting}"
        ) from exc


async def supervise(
    topology: CompiledTopology,
    everything: Settings,
    extra: Sequence[ProcessSpec],
    *,
    grace: float,
    streams: bool = False,
) -> int:
    """Run ``extra`` processes, each handled group's workers and (``streams``) each stream source's readers, scaled by the autoscaler."""
    settings = everything.autoscaler
    groups = handled_groups(topology, everything)
    # Every child writes its metrics here, and the API's /metrics serves them all for the host.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="taskq-metrics-"))
    # Scaled: each group starts at its min (0 sleeps until work comes); unscaled: at least one.
    floor = 0 if settings.autoscale else 1
    start = {g: max(floor, topology.group(g).spec.scale.min) for g in groups}
    # A stream source starts at its scale.min readers when scaled, at its consumers when not.
    for name, spec in topology.streams if streams else ():
        start[stream_target(name)] = spec.scale.min if settings.autoscale else spec.consumers
    specs = [*extra, *(scaled_spec(t, i) for t, n in start.items() for i in range(1, n + 1))]
    # Log records, not prints: `taskctl up > file` holds JSON lines only, its own included.
    supervisor = Supervisor(specs, grace=grace, say=logger.info)
    if not settings.autoscale:
        return await supervisor.run()
    scaler = LocalScaler(supervisor, started=start)
    return await with_autoscaler(
        topology, everything, scaler, groups, supervisor.run, streams=streams
    )


async def with_autoscaler(
    topology: CompiledTopology,
    everything: Settings,
    actuator: Actuator,
    groups: Sequence[str],
    main: Callable[[], Awaitable[int]],
    *,
    streams: bool = False,
) -> int:
    """Run ``main()`` with the autoscaler scaling ``groups`` (and ``streams``: every stream source's readers) and serving its status alongside."""
    settings = everything.autoscaler
    host, port = settings.autoscaler_host, settings.autoscaler_port
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        reader = await stack.enter_async_context(SignalReader(everything.broker))
        store = await stack.enter_async_context(job_store(everything.locations.store_url))
        backlogs = None
        if streams and topology.streams:
            backlogs = StreamSignalReader(open_redis(everything.streams))
            await stack.enter_async_context(backlogs)
        authenticator = open_authenticator(store, everything.auth)
        interval = settings.autoscale_interval
        autoscaler = Autoscaler(
            topology, reader, actuator, groups=groups, streams=backlogs, interval=interval
        )
        address = f"{host}:{port}"
        try:
            runner = await autoscaler.serve(authenticator, host=host, port=port)
        except OSError as exc:
            raise SettingsError(
                f"the autoscaler cannot serve its status on {address}: {exc.strerror or exc}; "
                "another taskctl up or autoscale may be running, or choose TASKQ_AUTOSCALER_PORT"
            ) from exc
        sources = ", ".join(name for name, _ in topology.streams) if backlogs else ""
        what = (", ".join(groups) or "none", f"; stream sources {sources}" if sources else "")
        logger.info(
            "autoscaler: groups {}{}, every {:g}s; status on http://{}/status",
            *what,
            interval,
            address,
        )
        loop = asyncio.create_task(autoscaler.run(stop))
        try:
            return await main()
        finally:
            stop.set()
            await asyncio.gather(loop, return_exceptions=True)
            await runner.cleanup()


async def autoscale(
    path: Path | None, *, kubernetes: bool, namespace: str | None, grace: float
) -> int:
    """Scale each handled group's local workers, or in ``namespace`` its Deployment and each stream source's, until SIGTERM or SIGINT."""
    settings, topology = load_settings(), compiled_topology(path)
    if not kubernetes:
        return await supervise(topology, settings, [], grace=grace)
    from consumers.autoscaler.kubernetes import KubeApi, KubernetesScaler

    stopping = signalled()

    async def until_stopped() -> int:
        await stopping.wait()
        return 0

    async with KubernetesScaler(await KubeApi.load(), namespace=namespace) as scaler:
        groups = handled_groups(topology, settings)
        code = await with_autoscaler(
            topology, settings, scaler, groups, until_stopped, streams=True
        )
    logger.info("autoscaler stopped")
    return code
