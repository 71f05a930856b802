"""``taskctl schedules``: each schedule's rule, next and last runs; pause and resume one."""

from typing import Annotated, Any

import typer

from taskctl import context

app = typer.Typer(
    name="schedules",
    help="List schedules with next and last runs; pause, resume.",
    invoke_without_command=True,
    rich_markup_mode=None,
)
Name = Annotated[str, typer.Argument(help="The schedule's name, as the topology file gives it.")]


@app.callback()
def schedules(
    ctx: typer.Context, file: context.TopologyFile = None, as_json: context.JsonFlag = False
) -> None:
    """List every schedule: its rule, job, next and last runs, and whether it is paused."""
    if ctx.invoked_subcommand is not None:
        return
    from producers.schedules import schedule_views
    from producers.submit import utc_now

    topology = context.compiled_topology(file)
    rows = context.in_store(lambda store: schedule_views(topology, store, utc_now()))
    if not rows and not as_json:
        typer.echo("the topology declares no schedules")
        return
    columns: list[context.Column] = [
        ("NAME", "name"),
        ("STATE", lambda r: "paused" if r["paused"] else "active"),
        ("NEXT RUN", lambda r: context.to_the_second(r["next_run"])),
        ("LAST RUN", lambda r: context.to_the_second(r["last_run"])),
        ("JOB", "job"),
        ("RULE", "rule"),
        ("MISFIRE", "misfire"),
        ("LAST JOB", lambda r: r["last_job_id"] or ""),
    ]
    context.print_rows(rows, columns, whole=4, as_json=as_json)


@app.command()
def pause(name: Name, file: context.TopologyFile = None, as_json: context.JsonFlag = False) -> None:
    """Pause a schedule: none of its occurrences fires until it is resumed."""
    _change(name, file, paused=True, as_json=as_json)


@app.command()
def resume(
    name: Name, file: context.TopologyFile = None, as_json: context.JsonFlag = False
) -> None:
    """Resume a paused schedule; the occurrences that fell due while it was paused never fire."""
    _change(name, file, paused=False, as_json=as_json)


def _change(name: str, file: Any, *, paused: bool, as_json: bool) -> None:
    from producers.schedules import set_paused
    from producers.submit import utc_now

    topology = context.compiled_topology(file)
    view = context.in_store(
        lambda store: set_paused(topology, store, name, utc_now(), paused=paused)
    )
    if as_json:
        context.print_json(view)
        return
    state = "paused" if view["paused"] else f"active, next run {view['next_run']}"
    typer.echo(f"schedule {name}: {state}")
