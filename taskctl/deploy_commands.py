"""``taskctl deploy``: what a Kubernetes deployment of taskq takes from the topology."""

import typer

from taskctl.context import OutputFile, TopologyFile, compiled_topology, write_out

app = typer.Typer(
    name="deploy",
    help="Derive deployment settings from the topology.\n\n"
    "The topology file is $TASKQ_TOPOLOGY or the packaged one, unless --file names another.",
    rich_markup_mode=None,
)

HEADER = (
    "# Written by `taskctl deploy render`: the Helm chart's topology values (deploy/helm/taskq).\n"
    "# The file itself, applied by the chart's pre-install/pre-upgrade Job, one worker\n"
    "# Deployment per group with its queues and scaling thresholds, one reader Deployment per\n"
    "# stream source with its stream, consumer group and thresholds, and blobRetentionDays, the\n"
    "# bucket expiry the Terraform modules take (blob_retention_days). Pass it with -f.\n"
)


def _block_dumper() -> type:
    """Return a YAML dumper that writes multi-line strings (the topology file) as ``|`` blocks."""
    import yaml

    class BlockDumper(yaml.SafeDumper):
        def represent_str(self, data: str) -> yaml.ScalarNode:
            style = "|" if "\n" in data else None
            return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    BlockDumper.add_representer(str, BlockDumper.represent_str)
    return BlockDumper


@app.command()
def render(file: TopologyFile = None, output: OutputFile = None) -> None:
    """Print the Helm chart values derived from the topology (YAML).

    `helm install taskq deploy/helm/taskq -f values.yaml -f <this file>` deploys one
    worker Deployment per group and one reader Deployment per stream source, each scaled
    on its own thresholds.
    """
    import yaml

    from topology.export import chart_values
    from topology.loader import topology_path
    from topology.settings import RetentionSettings, SubmitSettings, read_section

    path = file or topology_path()
    values = chart_values(
        compiled_topology(path),
        path.read_text(encoding="utf-8"),
        max_delay=read_section(SubmitSettings).max_delay,
        orphan_grace=read_section(RetentionSettings).orphan_blob_grace,
    )
    write_out(
        HEADER + yaml.dump(values, Dumper=_block_dumper(), sort_keys=False, width=100), output
    )
