"""``taskctl autoscale`` (run the autoscaler) and ``taskctl scale`` (show what it sees and decided)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from loguru import logger
from rich.table import Table

from consumers.autoscaler.loop import Actuator, Autoscaler
from consumers.autoscaler.metrics import AutoscalerMetrics
from consumers.autoscaler.settings import AutoscalerSettings
from consumers.autoscaler.signals import SignalReader
from consumers.autoscaler.status_server import serve_status
from consumers.process import groups_with_handlers, load_handlers
from consumers.settings import WorkerSettings
from producers.auth.authenticator import standalone_authenticator
from taskctl.admin_key import caller_key
from taskctl.context import fail, log_with_children, out, settings_or_exit, topology_or_exit
from taskctl.local_scaler import LocalScaler, worker_spec
from taskctl.supervisor import ProcessSpec, Supervisor
from topology.errors import SettingsError, TaskqError
from topology.model import CompiledTopology
from topology.settings import BrokerSettings, load_settings


def scaled_groups(topology: CompiledTopology) -> list[str]:
    """Return the groups a registered handler serves: the ones that get workers."""
    registry = load_handlers(load_settings(WorkerSettings).handlers)
    return groups_with_handlers(topology, registry)


async def supervise(
    topology: CompiledTopology,
    broker: BrokerSettings,
    extra: Sequence[ProcessSpec],
    *,
    grace: float,
) -> int:
    """Run ``extra`` processes and each handled group's workers, scaled by the autoscaler."""
    settings = load_settings(AutoscalerSettings)
    groups = scaled_groups(topology)
    # Every child writes its metrics here, and the API's /metrics serves them all for the host.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="taskq-metrics-"))
    # Scaled: each group starts at its min (0 sleeps until work comes); unscaled: at least one.
    floor = 0 if settings.autoscale else 1
    start = {g: max(floor, topology.group(g).spec.scale.min) for g in groups}
    specs = [*extra, *(worker_spec(g, i) for g in groups for i in range(1, start[g] + 1))]
    # Log records, not prints: `taskctl up > file` holds JSON lines only, its own included.
    supervisor = Supervisor(specs, grace=grace, say=logger.info)
    if not settings.autoscale:
        return await supervisor.run()
    scaler = LocalScaler(supervisor)
    for group, count in start.items():
        scaler.adopt(group, count)
    return await _with_autoscaler(topology, broker, scaler, groups, supervisor.run(), settings)


async def _with_autoscaler(
    topology: CompiledTopology,
    broker: BrokerSettings,
    actuator: Actuator,
    groups: Sequence[str],
    main: Any,
    settings: AutoscalerSettings,
) -> int:
    metrics = AutoscalerMetrics()
    stop = asyncio.Event()
    async with SignalReader(broker) as reader, standalone_authenticator() as authenticator:
        autoscaler = Autoscaler(
            topology,
            reader,
            actuator,
            groups=groups,
            interval=settings.autoscale_interval,
            metrics=metrics,
        )
        runner = await serve_status(
            autoscaler,
            metrics,
            authenticator,
            host=settings.autoscaler_host,
            port=settings.autoscaler_port,
        )
        logger.info(
            "autoscaler: groups {}, every {:g}s; status on http://{}:{}/status",
            ", ".join(groups) or "none",
            settings.autoscale_interval,
            settings.autoscaler_host,
            settings.autoscaler_port,
        )
        loop = asyncio.create_task(autoscaler.run(stop))
        try:
            return int(await main)
        finally:
            stop.set()
            await asyncio.gather(loop, return_exceptions=True)
            await runner.cleanup()


def autoscale(
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Topology file.")] = None,
    kubernetes: Annotated[
        bool,
        typer.Option(
            help="Scale Deployments through the Kubernetes API instead of local processes."
        ),
    ] = False,
    namespace: Annotated[
        str, typer.Option(help="Kubernetes namespace of the worker Deployments.")
    ] = "default",
    grace: Annotated[
        float, typer.Option(help="Seconds each local worker gets to drain on stop.")
    ] = 30.0,
) -> None:
    """Run the autoscaler: local worker processes (like taskctl up, without the API) or Kubernetes."""
    topology = topology_or_exit(file)
    broker = settings_or_exit()
    try:
        if kubernetes:
            code = asyncio.run(_kubernetes(topology, broker, namespace))
        else:
            log_with_children()
            code = asyncio.run(supervise(topology, broker, [], grace=grace))
    except TaskqError as exc:
        fail(exc)
    raise typer.Exit(code)


async def _kubernetes(topology: CompiledTopology, broker: BrokerSettings, namespace: str) -> int:
    from consumers.autoscaler.kubernetes import KubeApi, KubernetesScaler

    scaler = KubernetesScaler(KubeApi.load(), namespace=namespace)
    stop = asyncio.Event()
    try:
        return await _with_autoscaler(
            topology,
            broker,
            scaler,
            scaled_groups(topology),
            stop.wait(),
            load_settings(AutoscalerSettings),
        )
    finally:
        await scaler.close()


def scale(
    url: Annotated[
        str | None,
        typer.Option(help="The autoscaler's status URL (default: TASKQ_AUTOSCALER_HOST:PORT)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show each group's backlog, rates, current and desired workers, and the last decision."""
    if url is None:
        settings = load_settings(AutoscalerSettings)
        url = f"http://{settings.autoscaler_host}:{settings.autoscaler_port}/status"
    request = urllib.request.Request(url)
    key = caller_key()
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            groups = json.load(answer)["groups"]
    except urllib.error.HTTPError as exc:
        fail(SettingsError(f"the autoscaler at {url} refused: {exc.code} {_detail(exc)}"))
    except (OSError, ValueError, KeyError) as exc:
        fail(
            SettingsError(
                f"no autoscaler answers at {url} ({exc}); is taskctl up or taskctl autoscale running?"
            )
        )
    if as_json:
        out.print_json(data=groups)
        return
    table = Table("group", "backlog", "in/s", "acked/s", "current", "desired", "decided", "why")
    for g in groups:
        age = f"{time.time() - g['decided_at']:.0f}s ago" if g["decided_at"] else "-"
        why = g["reason"] + (f" [{g['error']}]" if g["error"] else "")
        table.add_row(
            g["group"],
            "?" if g["backlog"] is None else str(g["backlog"]),
            "?" if g["publish_rate"] is None else f"{g['publish_rate']:.1f}",
            "?" if g["ack_rate"] is None else f"{g['ack_rate']:.1f}",
            str(g["current"]),
            str(g["desired"]),
            age,
            why,
        )
    out.print(table)


def _detail(error: urllib.error.HTTPError) -> str:
    """Return the problem detail of a refusal, or its reason."""
    try:
        return str(json.loads(error.read())["detail"])
    except (OSError, ValueError, KeyError, TypeError):
        return str(error.reason)
