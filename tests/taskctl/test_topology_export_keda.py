from pathlib import Path

import yaml
from typer.testing import CliRunner

from taskctl.cli import app
from tests.deploy.chart import WITH_STREAMS
from tests.helpers import write_topology
from tests.keda_schemas import validate_keda
from topology.compiled import compile_topology
from topology.export import KedaOptions, keda_manifests
from topology.loader import load_topology

runner = CliRunner()


def test_export_keda_prints_multi_document_yaml(topology):
    result = runner.invoke(app, ["topology", "export", "--keda"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Written by `taskctl topology export --keda`")
    documents = list(yaml.safe_load_all(result.stdout))
    assert documents == keda_manifests(topology)
    assert [d["kind"] for d in documents] == ["TriggerAuthentication"] + ["ScaledObject"] * len(
        topology.groups
    )
    for document in documents:
        validate_keda(document)


def test_export_keda_writes_a_file_with_the_options(tmp_path: Path, topology):
    target = tmp_path / "keda.yaml"
    result = runner.invoke(
        app,
        [
            "topology",
            "export",
            "--keda",
            "-o",
            str(target),
            "--namespace",
            "jobs",
            "--vhost",
            "prod",
            "--polling-interval",
            "30",
            "--auth-ref",
            "rmq",
            "--no-trigger-auth",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {target}" in result.output
    documents = list(yaml.safe_load_all(target.read_text()))
    options = KedaOptions(
        namespace="jobs",
        vhost="prod",
        polling_interval=30,
        authentication="rmq",
        trigger_authentication=False,
    )
    assert documents == keda_manifests(topology, options)
    for document in documents:
        validate_keda(document)
        assert document["metadata"]["namespace"] == "jobs"


def test_export_keda_refuses_a_group_kubernetes_cannot_name(tmp_path: Path):
    path = write_topology(tmp_path, "groups:\n  bulk_mail: {jobs: [bulk]}\n")
    result = runner.invoke(app, ["topology", "export", "--keda", "-f", str(path)])
    assert result.exit_code == 1
    assert "taskq-worker-bulk_mail" in result.output
    assert "Traceback" not in result.output


def test_export_without_keda_still_writes_definitions_json(topology):
    result = runner.invoke(app, ["topology", "export"])
    assert result.exit_code == 0, result.output
    assert result.stdout.lstrip().startswith("{")


def test_export_keda_scales_the_stream_sources_with_the_redis_options(tmp_path: Path):
    path = write_topology(tmp_path, WITH_STREAMS)
    topology = compile_topology(load_topology(path))
    options = ["--redis-secret", "cache", "--no-redis-password", "--redis-tls"]
    result = runner.invoke(
        app,
        ["topology", "export", "--keda", "-f", str(path), *options, "--redis-database", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "# of the Secret 'cache', which you create." in result.stdout
    documents = list(yaml.safe_load_all(result.stdout))
    expected = KedaOptions(
        redis_secret="cache", redis_password=False, redis_tls=True, redis_database=2
    )
    assert documents == keda_manifests(topology, expected)
    for document in documents:
        validate_keda(document)
    names = [d["metadata"]["name"] for d in documents if d["kind"] == "ScaledObject"]
    assert {"taskq-stream-shop", "taskq-stream-audit"} < set(names)
