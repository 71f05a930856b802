"""``taskctl up|worker|serve|autoscale``: the pipeline's processes in the foreground, their logs as output."""

from typing import Annotated

import typer

from taskctl.context import TopologyFile, run, serve

app = typer.Typer(rich_markup_mode=None)


@app.command()
def up(
    file: TopologyFile = None,
    grace: Annotated[
        float, typer.Option(help="Seconds each process gets to drain on stop.")
    ] = 30.0,
) -> None:
    """Run the whole pipeline here until Ctrl-C.

    Applies the topology, then runs the API, each handled group's workers, the
    scheduler (when the topology declares schedules) and the autoscaler. Its logs are
    its output.
    """
    from taskctl.pipeline import up as run_up

    serve("taskctl up", lambda: run(run_up(file, grace=grace)))


@app.command()
def worker(group: Annotated[str, typer.Argument(help="The consumer group to run.")]) -> None:
    """Run one consumer group's worker until SIGTERM.

    SIGTERM or Ctrl-C drains it. Its logs are its output.
    """
    from taskctl.assembly import run_worker
    from topology.settings import load_settings

    serve(f"the worker of group {group}", lambda: run(run_worker(group, load_settings())))


@app.command()
def scheduler() -> None:
    """Run a scheduler replica until SIGTERM.

    It fires the topology's schedules while it leads; run as many replicas as you like,
    exactly one fires each occurrence. taskctl up runs one. Its logs are its output.
    """
    from taskctl.assembly import run_scheduler
    from topology.settings import load_settings

    serve("the scheduler", lambda: run(run_scheduler(load_settings())))


@app.command()
def stream(
    source: Annotated[str, typer.Argument(help="The stream source of the topology to run.")],
    consumer: Annotated[
        str | None,
        typer.Option(
            help="This reader's consumer name in the stream's group (default: <host>-1); a "
            "restarted reader with the same name reads its pending entries first."
        ),
    ] = None,
) -> None:
    """Turn a Redis stream's entries into jobs until SIGTERM.

    Runs one stream source of the topology: an entry is acknowledged once the broker
    confirmed its job. taskctl up runs each source's readers. Its logs are its output.
    """
    import socket

    from taskctl.assembly import run_stream
    from topology.settings import load_settings

    name = consumer or f"{socket.gethostname()}-1"
    serve(
        f"the stream source {source}",
        lambda: run(run_stream(source, name, load_settings())),
    )


@app.command("serve")
def api(
    grpc: Annotated[
        bool,
        typer.Option(
            "--grpc", help="Serve only the gRPC job API, on TASKQ_GRPC_HOST:TASKQ_GRPC_PORT."
        ),
    ] = False,
) -> None:
    """Serve the HTTP API until SIGTERM.

    It listens on TASKQ_HOST:TASKQ_PORT, and serves the gRPC job API beside it on
    TASKQ_GRPC_HOST:TASKQ_GRPC_PORT when TASKQ_GRPC=true; taskctl up runs it. Its logs are
    its output.
    """
    from taskctl.assembly import serve_api, serve_grpc
    from topology.settings import load_settings

    if grpc:
        serve("the gRPC job API", lambda: run(serve_grpc(load_settings())))
    else:
        serve("the API", lambda: serve_api(load_settings()))


@app.command()
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
            help="Kubernetes namespace of the worker and reader Deployments "
            "(default: the pod's, else the kubeconfig context's, else default)."
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds each local worker gets to drain on stop.")
    ] = 30.0,
) -> None:
    """Run the autoscaler, scaling local workers or Kubernetes.

    Locally it runs each handled group's workers as taskctl up does, without the API; with
    --kubernetes it scales the Deployments taskq-worker-<group> and, on their Redis backlog,
    taskq-stream-<source>, until SIGTERM or Ctrl-C. Its logs are its output.
    """
    from taskctl.pipeline import autoscale as run_autoscale

    serve(
        "taskctl autoscale",
        lambda: run(run_autoscale(file, kubernetes=kubernetes, namespace=namespace, grace=grace)),
    )
