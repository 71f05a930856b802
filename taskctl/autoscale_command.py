"""``taskctl autoscale`` (run the autoscaler) and ``taskctl scale`` (show what it sees and decided)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from taskctl.context import Cell, JsonFlag, TopologyFile, log_as_output, print_rows, run, serve
from topology.errors import SettingsError

if TYPE_CHECKING:
    from urllib.error import HTTPError


def autoscale(
    file: TopologyFile = None,
    kubernetes: Annotated[
        bool,
        typer.Option(
            help="Scale Deployments through the Kubernetes API instead of local processes."
        ),
    ] = False,
    namespace: Annotated[
        str | None,
        typer.Option(
            help="Kubernetes namespace of the worker Deployments "
            "(default: the pod's, else the kubeconfig context's, else default)."
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds each local worker gets to drain on stop.")
    ] = 30.0,
) -> None:
    """Run the autoscaler, scaling local workers or Kubernetes.

    Locally it runs each handled group's workers as taskctl up does, without the API; with
    --kubernetes it scales the Deployments taskq-worker-<group>. Its logs are its output.
    """
    log_as_output()
    from taskctl import pipeline
    from topology.compiled import compile_topology
    from topology.loader import load_topology, topology_path
    from topology.settings import load_settings

    async def main() -> int:
        settings = load_settings()
        topology = compile_topology(load_topology(file or topology_path(settings.locations)))
        if kubernetes:
            return await pipeline.kubernetes(topology, settings, namespace)
        return await pipeline.supervise(topology, settings, [], grace=grace)

    serve("taskctl autoscale", lambda: run(main()))


def scale(
    url: Annotated[
        str | None,
        typer.Option(help="The autoscaler's status URL (default: TASKQ_AUTOSCALER_HOST:PORT)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show what the autoscaler sees and decided.

    Each group's backlog, current and desired workers, the last decision and why, and the
    publish and ack rates, read from the status URL of a running taskctl up or autoscale.
    """
    import urllib.error
    import urllib.request

    from taskctl.admin_key import caller_key
    from topology.settings import AutoscalerSettings, read_section

    if url is None:
        settings = read_section(AutoscalerSettings)
        url = f"http://{settings.autoscaler_host}:{settings.autoscaler_port}/status"
    request = urllib.request.Request(url)
    key = caller_key()
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            groups = orjson.loads(answer.read())["groups"]
    except urllib.error.HTTPError as exc:
        raise SettingsError(f"the autoscaler at {url} refused: {exc.code} {_detail(exc)}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise SettingsError(
            f"no autoscaler answers at {url} ({exc}); is taskctl up or taskctl autoscale running?"
        ) from exc
    columns: list[tuple[str, Cell]] = [
        ("group", "group"),
        ("backlog", lambda g: "?" if g["backlog"] is None else str(g["backlog"])),
        *[("current", "current"), ("desired", "desired")],
        ("why", lambda g: g["reason"] + (f" [{g['error']}]" if g["error"] else "")),
        (
            "decided",
            lambda g: f"{time.time() - g['decided_at']:.0f}s ago" if g["decided_at"] else "-",
        ),
        ("in/s", lambda g: "?" if g["publish_rate"] is None else f"{g['publish_rate']:.1f}"),
        ("acked/s", lambda g: "?" if g["ack_rate"] is None else f"{g['ack_rate']:.1f}"),
    ]
    print_rows(groups, columns, whole=1, as_json=as_json)


def _detail(error: HTTPError) -> str:
    """Return the problem detail of a refusal, or its reason."""
    try:
        return str(orjson.loads(error.read())["detail"])
    except (OSError, ValueError, KeyError, TypeError):
        return str(error.reason)
