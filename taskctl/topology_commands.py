"""``taskctl topology``: plan, apply, export and graph the declared topology."""

from typing import Annotated

import orjson
import typer

from taskctl import context

app = typer.Typer(
    name="topology",
    help="Plan, apply, export and draw the topology.\n\n"
    "The topology file is $TASKQ_TOPOLOGY or the packaged one, unless --file names another.",
    rich_markup_mode=None,
)

VhostOption = Annotated[
    str | None, typer.Option("--vhost", help="Virtual host (default: the one in TASKQ_AMQP_URL).")
]
_STYLE = {
    "create": "[green]+ create  [/]",
    "match": "[dim]= match   [/]",
    "conflict": "[bold red]! conflict[/]",
    "extra": "[yellow]? extra   [/]",
}


@app.command()
def plan(
    file: context.TopologyFile = None,
    vhost: VhostOption = None,
    every: Annotated[
        bool, typer.Option("--all", "-a", help="Also list the objects that match.")
    ] = False,
) -> None:
    """Compare the topology with the live broker.

    Exits 0 in sync, 2 on differences, 3 on conflicts.
    """
    from rich.markup import escape

    from topology.apply import Action, plan_topology

    result = context.run(
        plan_topology(context.compiled_topology(file), context.broker_settings(vhost))
    )
    for line in result.choices:
        context.out().print(escape(line))
    for item in result.items:
        if item.action is Action.MATCH and not every:
            continue
        detail = f": {item.detail}" if item.detail else ""
        context.out().print(f"{_STYLE[item.action.value]} {escape(item.label + detail)}")
        if item.hint:
            context.out().print(f"             [dim]hint: {escape(item.hint)}[/]")
    counts = ", ".join(
        f"{len(result.of(a))} to {a.value}" for a in (Action.CREATE, Action.CONFLICT)
    )
    context.out().print(
        f"{len(result.of(Action.MATCH))} match, {counts}, {len(result.of(Action.EXTRA))} extra "
        "(extras are only deleted by `apply --prune`)"
    )
    raise typer.Exit(result.exit_code)


@app.command()
def apply(
    file: context.TopologyFile = None,
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
    """Declare the topology; delete only when asked.

    Idempotent; conflicting declarations are refused unless --recreate names them.
    """
    from rich.markup import escape

    from topology.apply import Action, apply_topology, conflict_message

    settings = context.broker_settings(vhost)
    context.out().print(escape(f"applying {settings.describe()} vhost {settings.vhost!r}"))
    report = context.run(
        apply_topology(
            context.compiled_topology(file),
            settings,
            recreate=recreate or (),
            prune=prune,
            progress=lambda line: context.out().print(line, markup=False),
        )
    )
    for line in report.before.choices:
        context.out().print(escape(line))
    for item in report.before.of(Action.CREATE):
        context.out().print(f"[green]+ created[/] {escape(item.label)}")
    context.out().print(escape(f"{report.server}: {report.summary()}"))
    if report.after.of(Action.CONFLICT):
        context.out().print(conflict_message(report.after), markup=False)
        raise typer.Exit(3)


@app.command()
def export(
    file: context.TopologyFile = None,
    output: context.OutputFile = None,
    vhost: Annotated[
        str, typer.Option(help="Virtual host written into the definitions or the KEDA triggers.")
    ] = "/",
    keda: Annotated[
        bool,
        typer.Option(
            "--keda",
            help="Write KEDA manifests (YAML): one ScaledObject per group, scaling the "
            "Deployment taskq-worker-<group> on its work queues' length, and one per stream "
            "source, scaling taskq-stream-<source> on its consumer group's lag and pending entries.",
        ),
    ] = False,
    namespace: Annotated[
        str | None, typer.Option(help="With --keda: the Kubernetes namespace of the manifests.")
    ] = None,
    polling_interval: Annotated[
        int, typer.Option(min=1, help="With --keda: seconds between two looks at the queues.")
    ] = 15,
    auth_ref: Annotated[
        str, typer.Option(help="With --keda: the TriggerAuthentication holding the management URL.")
    ] = "taskq-rabbitmq",
    secret: Annotated[
        str, typer.Option(help="With --keda: the Secret whose key `host` holds the management URL.")
    ] = "taskq-rabbitmq",
    trigger_auth: Annotated[
        bool,
        typer.Option(
            help="With --keda: also write the TriggerAuthentications reading the Secrets."
        ),
    ] = True,
    redis_auth_ref: Annotated[
        str,
        typer.Option(help="With --keda: the TriggerAuthentication holding Redis's address."),
    ] = "taskq-redis",
    redis_secret: Annotated[
        str,
        typer.Option(
            help="With --keda: the Secret whose keys `address` (host:port) and `password` "
            "KEDA's redis-streams triggers read."
        ),
    ] = "taskq-redis",
    redis_password: Annotated[
        bool,
        typer.Option(help="With --keda: Redis wants a password (the Secret's key `password`)."),
    ] = True,
    redis_tls: Annotated[
        bool, typer.Option(help="With --keda: reach Redis over TLS, as rediss:// does.")
    ] = False,
    redis_database: Annotated[
        int, typer.Option(min=0, help="With --keda: the Redis database of the streams.")
    ] = 0,
) -> None:
    """Print the RabbitMQ definitions, or KEDA manifests.

    Definitions are JSON for `rabbitmqctl import_definitions`; --keda writes YAML instead.
    """
    from topology.export import KedaOptions, export_definitions, keda_manifests

    topology = context.compiled_topology(file)
    if keda:
        import yaml

        options = KedaOptions(
            namespace,
            vhost,
            polling_interval,
            auth_ref,
            secret,
            trigger_auth,
            redis_auth_ref,
            redis_secret,
            redis_password,
            redis_tls,
            redis_database,
        )
        header = (
            "# Written by `taskctl topology export --keda`: one KEDA ScaledObject per group, scaling\n"
            "# the Deployment taskq-worker-<group> on its work queues' length. KEDA reads the queues\n"
            f"# through the management API URL in key `host` of the Secret {secret!r}\n"
            "# (e.g. http://user:password@rabbitmq:15672/), which you create.\n"
        )
        if topology.streams:
            keys = (
                "keys `address` (host:port) and `password`" if redis_password else "key `address`"
            )
            header += (
                "# One per stream source, scaling taskq-stream-<source> on its consumer group's\n"
                f"# lag and pending entries. KEDA reads the streams through the {keys}\n"
                f"# of the Secret {redis_secret!r}, which you create.\n"
            )
        manifests = keda_manifests(topology, options)
        text = header + yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True)
    else:
        definitions = export_definitions(topology, vhost=vhost)
        text = orjson.dumps(definitions, option=orjson.OPT_INDENT_2).decode() + "\n"
    context.write_out(text, output)


@app.command()
def graph(file: context.TopologyFile = None) -> None:
    """Print a Mermaid diagram of the exchanges, queues and bindings."""
    from topology.export import mermaid

    typer.echo(mermaid(context.compiled_topology(file)), nl=False)


@app.command()
def validate(file: context.TopologyFile = None) -> None:
    """Check the topology file and summarise it; no broker needed."""
    from topology.durations import format_duration

    topology = context.compiled_topology(file)
    for group in topology.groups:
        spec = group.spec
        context.out().print(
            f"group [bold]{group.name}[/]: jobs {', '.join(spec.jobs)} -> {', '.join(group.queue_names)} "
            f"(prefetch {spec.prefetch}, concurrency {spec.concurrency}, "
            f"{spec.retry.max_attempts} attempts, finished jobs kept {format_duration(spec.retention)})"
        )
    context.out().print(
        f"{len(topology.exchanges)} exchanges, {len(topology.queues)} queues, "
        f"{len(topology.bindings)} bindings, {len(topology.tiers)} delay tiers "
        f"({topology.tiers[0].label} .. {topology.tiers[-1].label})"
    )
