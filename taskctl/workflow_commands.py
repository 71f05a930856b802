"""``taskctl workflow``: a workflow's status and steps, and cancelling one."""

from typing import TYPE_CHECKING, Annotated

import typer

from taskctl import context

if TYPE_CHECKING:
    from producers.workflows import WorkflowAnswer

app = typer.Typer(
    name="workflow",
    help="Show or cancel a workflow (a chain, group or chord).",
    rich_markup_mode=None,
)
WorkflowId = Annotated[str, typer.Argument(metavar="ID", help="The workflow's id.")]


@app.command()
def show(workflow_id: WorkflowId, as_json: context.JsonFlag = False) -> None:
    """Print a workflow: its status, counts and error, then each step's job."""
    from producers.workflows import read_workflow

    sealer, viewer = context.data_sealer(), context.client_viewer()
    _print(
        context.in_store(lambda store: read_workflow(store, sealer, workflow_id, viewer)), as_json
    )


@app.command()
def cancel(workflow_id: WorkflowId, as_json: context.JsonFlag = False) -> None:
    """Cancel a running workflow and every step not started (steps running now finish)."""
    from producers.submit import utc_now
    from producers.workflows import cancel_workflow

    sealer, viewer = context.data_sealer(), context.client_viewer()
    _print(
        context.in_store(lambda s: cancel_workflow(s, sealer, workflow_id, viewer, utc_now())),
        as_json,
    )


def _print(answer: "WorkflowAnswer", as_json: bool) -> None:
    from producers.workflows import workflow_view

    view = workflow_view(answer)
    if as_json:
        context.print_json(view)
        return
    counts = f"{view['steps_total']} steps, {view['pending']} pending, {view['failed']} failed"
    typer.echo(f"workflow {view['id']}: {view['kind']}, {view['status']} ({counts})")
    if view["error"]:
        typer.echo(f"error: {view['error']}")
    rows = [
        {
            "position": str(step["position"]),
            "role": step["role"],
            "status": (step["job"] or {}).get("status", "deleted"),
            "type": (step["job"] or {}).get("type", ""),
            "job": step["job_id"],
            "error": (step["job"] or {}).get("last_error") or "",
        }
        for step in view["steps"]
    ]
    context.print_rows(
        rows, ["position", "role", "status", "type", "job", "error"], whole=5, as_json=False
    )
