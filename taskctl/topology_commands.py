"""``taskctl topology``: plan, apply, export and graph the declared topology."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
import yaml

from taskctl.context import fail, out, run, settings_or_exit, topology_or_exit
from topology.apply import apply_topology, conflict_message, plan_topology
from topology.errors import TaskqError
from topology.export import export_definitions
from topology.graph import mermaid
from topology.keda import KedaOptions, keda_manifests
from topology.model import CompiledTopology
from topology.plan import Action, Plan

app = typer.Typer(help="Plan, apply, export and draw the topology declared in the topology file.")

FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file", "-f", help="Topology file (default: $TASKQ_TOPOLOGY or the packaged one)."
    ),
]
VhostOption = Annotated[
    str | None, typer.Option("--vhost", help="Virtual host (default: the one in TASKQ_AMQP_URL).")
]
_STYLE = {
    Action.CREATE: "[green]+ create  [/]",
    Action.MATCH: "[dim]= match   [/]",
    Action.CONFLICT: "[bold red]! conflict[/]",
    Action.EXTRA: "[yellow]? extra   [/]",
}


def print_plan(plan: Plan, *, verbose: bool) -> None:
    """Print the plan: changes always, matching objects only when ``verbose``."""
    for item in plan.items:
        if item.action is Action.MATCH and not verbose:
            continue
        detail = f": {item.detail}" if item.detail else ""
        out.print(f"{_STYLE[item.action]} {item.label}{detail}", highlight=False)
        if item.hint:
            out.print(f"             [dim]hint: {item.hint}[/]", highlight=False)
    counts = ", ".join(f"{len(plan.of(a))} to {a.value}" for a in (Action.CREATE, Action.CONFLICT))
    extras = len(plan.of(Action.EXTRA))
    out.print(
        f"{len(plan.of(Action.MATCH))} match, {counts}, {extras} extra "
        "(extras are only deleted by `apply --prune`)",
        highlight=False,
    )


@app.command()
def plan(
    file: FileOption = None,
    vhost: VhostOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also list matching objects.")
    ] = False,
) -> None:
    """Compare the topology with the live broker; exit 0 in sync, 2 on differences, 3 on conflicts."""
    topology = topology_or_exit(file)
    settings = settings_or_exit(vhost)
    result = run(plan_topology(topology, settings))
    print_plan(result, verbose=verbose)
    raise typer.Exit(result.exit_code)


@app.command()
def apply(
    file: FileOption = None,
    vhost: VhostOption = None,
    recreate: Annotated[
        list[str] | None,
        typer.Option(
            help="Delete and re-declare this conflicting (empty) queue or exchange; repeatable."
        ),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(
            help="Delete namespace objects the file no longer declares (queues must be empty)."
        ),
    ] = False,
) -> None:
    """Declare the topology idempotently; refuse conflicts; delete only when asked."""
    topology = topology_or_exit(file)
    settings = settings_or_exit(vhost)
    out.print(f"applying {settings.describe()} vhost {settings.vhost!r}", highlight=False)
    report = run(
        apply_topology(topology, settings, recreate=recreate or (), prune=prune, progress=out.print)
    )
    created = report.before.of(Action.CREATE)
    for item in created:
        out.print(f"[green]+ created[/] {item.label}", highlight=False)
    out.print(
        f"{report.server.product} {report.server.version}: {len(created)} created, "
        f"{len(report.before.of(Action.MATCH))} unchanged, {len(report.deleted)} deleted",
        highlight=False,
    )
    if report.after.of(Action.CONFLICT):
        out.print(conflict_message(report.after))
        raise typer.Exit(3)


@app.command()
def export(
    file: FileOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    vhost: Annotated[
        str, typer.Option(help="Virtual host written into the definitions or the KEDA triggers.")
    ] = "/",
    keda: Annotated[
        bool,
        typer.Option(
            "--keda",
            help="Write KEDA manifests (YAML): one ScaledObject per group, scaling the "
            "Deployment taskq-worker-<group> on its work queues' length.",
        ),
    ] = False,
    namespace: Annotated[
        str | None, typer.Option(help="With --keda: the Kubernetes namespace of the manifests.")
    ] = None,
    polling_interval: Annotated[
        int, typer.Option(min=1, help="With --keda: seconds between two looks at the queues.")
    ] = 15,
    auth_ref: Annotated[
        str,
        typer.Option(help="With --keda: the TriggerAuthentication holding the management URL."),
    ] = "taskq-rabbitmq",
    secret: Annotated[
        str,
        typer.Option(help="With --keda: the Secret whose key `host` holds the management URL."),
    ] = "taskq-rabbitmq",
    trigger_auth: Annotated[
        bool,
        typer.Option(help="With --keda: also write the TriggerAuthentication reading that Secret."),
    ] = True,
) -> None:
    """Print RabbitMQ definitions JSON for `rabbitmqctl import_definitions`, or KEDA manifests."""
    topology = topology_or_exit(file)
    if keda:
        options = KedaOptions(namespace, vhost, polling_interval, auth_ref, secret, trigger_auth)
        data = keda_yaml(topology, options)
    else:
        definitions = export_definitions(topology, vhost=vhost)
        data = orjson.dumps(definitions, option=orjson.OPT_INDENT_2) + b"\n"
    if output is None:
        typer.echo(data.decode(), nl=False)
    else:
        output.write_bytes(data)
        out.print(f"wrote {output}", highlight=False)


def keda_yaml(topology: CompiledTopology, options: KedaOptions) -> bytes:
    """Return the KEDA manifests of ``topology`` as multi-document YAML, or exit 1 naming the problem."""
    try:
        manifests = keda_manifests(topology, options)
    except TaskqError as exc:
        fail(exc)
    header = (
        "# Written by `taskctl topology export --keda`: one KEDA ScaledObject per group, scaling\n"
        "# the Deployment taskq-worker-<group> on its work queues' length. KEDA reads the queues\n"
        f"# through the management API URL in key `host` of the Secret {options.secret!r}\n"
        "# (e.g. http://user:password@rabbitmq:15672/), which you create.\n"
    )
    return (header + yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True)).encode()


@app.command()
def graph(file: FileOption = None) -> None:
    """Print a Mermaid diagram of the exchanges, queues and bindings."""
    typer.echo(mermaid(topology_or_exit(file)), nl=False)


@app.command()
def validate(file: FileOption = None) -> None:
    """Check the topology file and summarise it; no broker needed."""
    topology = topology_or_exit(file)
    for group in topology.groups:
        spec = group.spec
        out.print(
            f"group [bold]{group.name}[/]: jobs {', '.join(spec.jobs)} -> {', '.join(group.queue_names)} "
            f"(prefetch {spec.prefetch}, concurrency {spec.concurrency}, "
            f"{spec.retry.max_attempts} attempts)",
            highlight=False,
        )
    out.print(
        f"{len(topology.exchanges)} exchanges, {len(topology.queues)} queues, "
        f"{len(topology.bindings)} bindings, {len(topology.tiers)} delay tiers "
        f"({topology.tiers[0].label} .. {topology.tiers[-1].label})",
        highlight=False,
    )
