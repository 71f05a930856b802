"""``taskctl retention sweep``: remove now what taskq keeps no longer, with progress."""

from typing import TYPE_CHECKING, Annotated

import typer

from taskctl.context import JsonFlag, out, print_json, run

if TYPE_CHECKING:
    from jobstore.retention import SweepReport

app = typer.Typer(
    name="retention",
    help=(
        "Delete expired jobs, their blobs and orphaned blobs."
        "\n\nFinished jobs expire once their group's retention has passed. The API does the same"
        " in the background every TASKQ_RETENTION_SWEEP_INTERVAL seconds, a few batches at a"
        " time."
    ),
    rich_markup_mode=None,
)


@app.command()
def sweep(
    batch: Annotated[
        int, typer.Option(min=1, max=1000, help="Jobs deleted, and blobs listed, per step.")
    ] = 500,
    as_json: JsonFlag = False,
) -> None:
    """Delete everything due now, printing the counts after each step.

    Finished jobs (succeeded, failed, dead, cancelled) go once their group's retention has
    passed since they ended, with their results and claim-checked payloads; blobs no job has
    go once they are TASKQ_ORPHAN_BLOB_GRACE seconds old. Jobs still queued or running stay.
    """
    from jobstore.retention import RetentionSweep
    from producers.backends import open_backends
    from topology.settings import load_settings

    console = out()

    def shown(report: "SweepReport") -> None:
        if not as_json:
            console.print(_removed(report) + " so far")

    async def go() -> "SweepReport":
        settings = load_settings()
        backends = await open_backends(settings)
        try:
            swept = RetentionSweep(
                backends.store,
                backends.blobs,
                backends.topology.kept_for,
                grace=settings.retention.orphan_blob_grace,
                batch=batch,
            )
            return await swept.sweep(progress=shown)
        finally:
            await backends.close()

    report = run(go())
    if as_json:
        print_json({"jobs": report.jobs, "blobs": report.blobs, "orphans": report.orphans})
    else:
        console.print(f"done: {_removed(report)}")


def _removed(report: "SweepReport") -> str:
    return (
        f"{report.jobs} finished jobs, {report.blobs} of their blobs "
        f"and {report.orphans} orphaned blobs removed"
    )
