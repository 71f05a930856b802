import json
import textwrap
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from taskctl.cli import app
from tests.deploy.chart import (
    CHART,
    ROOT,
    WITH_STREAMS,
    of_kind,
    render,
    require,
    streams_values,
    validate_manifest,
)

# Two groups, one of them lanes: the chart's default groups are replaced by these.
from tests.topology.test_keda import TOPOLOGY as MORE_GROUPS
from topology.compiled import CompiledTopology, compile_topology
from topology.errors import TopologyError
from topology.export import KedaOptions, chart_values, keda_manifests
from topology.loader import parse_topology

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "keda": {
        "scaling": {"mode": "keda"},
        "api": {"ingress": {"enabled": True, "className": "nginx", "host": "jobs.example.org"}},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "taskq"}},
    },
    "autoscaler": {
        "scaling": {"mode": "autoscaler"},
        "api": {"ingress": {"enabled": False}},
        "blob": {"url": "s3://acme-taskq-payloads/taskq", "s3Region": "eu-west-1"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/t"}},
        "secretEnv": {"TASKQ_API_KEY_PEPPER": {"name": "taskq-keys", "key": "pepper"}},
    },
    "minimal": {
        "scaling": {"mode": "none"},
        "networkPolicy": {"enabled": False},
        "serviceAccount": {"create": False, "name": "jobs"},
        "workers": {"overrides": {"github": {"enabled": False}}},
    },
    # A topology with stream sources, under each scaler.
    "streams-autoscaler": {**streams_values(), "scaling": {"mode": "autoscaler"}},
    "streams-keda": {**streams_values(), "scaling": {"mode": "keda"}},
    "streams-none": {
        **streams_values(),
        "scaling": {"mode": "none"},
        "readers": {"overrides": {"shop": {"enabled": False}}},
    },
}
STREAM_SOURCES = {"shop": ("shop:orders", "taskq"), "audit": ("audit", "readers")}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values, namespace="jobs") for name, values in PROFILES.items()}


def topology_values(text: str) -> tuple[CompiledTopology, dict[str, Any]]:
    topology = compile_topology(parse_topology(textwrap.dedent(text)))
    return topology, chart_values(topology, text, max_delay=86400.0, orphan_grace=86400.0)


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["spec"]["template"]["spec"]["containers"]


def workloads(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] in ("Deployment", "Job")]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_manifest_validates_strictly(rendered, profile):
    documents = rendered[profile]
    assert documents
    for document in documents:
        validate_manifest(document)


def test_the_chart_lints_clean_with_the_strict_linter():
    helm = require("helm_python")
    report = helm.lint(str(CHART), strict=True, kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, report
    assert not report["errors"], report


def test_one_worker_deployment_per_group_of_the_topology(rendered, topology):
    deployments = of_kind(rendered["default"], "Deployment")
    workers = {n: d for n, d in deployments.items() if n.startswith("taskq-worker-")}
    assert set(workers) == {f"taskq-worker-{g.name}" for g in topology.groups}
    for group in topology.groups:
        worker = workers[f"taskq-worker-{group.name}"]
        assert containers(worker)[0]["args"] == ["worker", group.name]
        assert worker["spec"]["template"]["metadata"]["labels"]["taskq.io/group"] == group.name
        # The autoscaler owns the replicas: an upgrade must not reset them.
        assert "replicas" not in worker["spec"]
    assert set(of_kind(rendered["default"], "PodDisruptionBudget")) == set(workers) | {"taskq-api"}


def test_a_group_added_to_the_topology_gets_its_deployment_and_scaled_object():
    topology, values = topology_values(MORE_GROUPS)
    documents = render({**values, "scaling": {"mode": "keda"}})
    deployments = of_kind(documents, "Deployment")
    assert {"taskq-worker-email", "taskq-worker-pay", "taskq-worker-callbacks"} <= set(deployments)
    assert "taskq-worker-github" not in deployments  # the chart's default groups are replaced
    scaled = of_kind(documents, "ScaledObject")
    assert set(scaled) == {f"taskq-worker-{g.name}" for g in topology.groups}
    for document in documents:
        validate_manifest(document)


def test_the_charts_scaled_objects_are_the_keda_exports(rendered, topology):
    _, values = topology_values(MORE_GROUPS)
    for source, documents in (
        (topology, rendered["keda"]),
        (compile_topology(parse_topology(MORE_GROUPS)), render({**values, **PROFILES["keda"]})),
    ):
        options = KedaOptions(authentication="taskq-rabbitmq", trigger_authentication=False)
        exported = {m["metadata"]["name"]: m["spec"] for m in keda_manifests(source, options)}
        charted = {n: d["spec"] for n, d in of_kind(documents, "ScaledObject").items()}
        assert charted == exported
        auth = of_kind(documents, "TriggerAuthentication")["taskq-rabbitmq"]["spec"]
        assert auth == {
            "secretTargetRef": [
                {"parameter": "host", "name": "taskq-broker", "key": "management-url"}
            ]
        }


@pytest.mark.parametrize(
    ("redis", "options"),
    [
        ({}, KedaOptions()),
        (
            {"secret": "cache", "passwordKey": "", "enableTLS": True, "databaseIndex": 3},
            KedaOptions(
                redis_secret="cache", redis_password=False, redis_tls=True, redis_database=3
            ),
        ),
    ],
)
def test_the_charts_stream_scaled_objects_are_the_keda_exports(redis, options):
    documents = render({**streams_values(), "scaling": {"mode": "keda", "keda": {"redis": redis}}})
    topology = compile_topology(parse_topology(WITH_STREAMS))
    exported = {m["metadata"]["name"]: m["spec"] for m in keda_manifests(topology, options)}
    charted = {n: d["spec"] for n, d in of_kind(documents, "ScaledObject").items()}
    scaled = {n: spec for n, spec in exported.items() if "triggers" in spec}
    assert charted == scaled
    assert {f"taskq-stream-{s}" for s in STREAM_SOURCES} < set(scaled)
    # The chart's values name the Secret key of each parameter; the export's Secret uses its name.
    auth = of_kind(documents, "TriggerAuthentication")["taskq-redis"]["spec"]
    parameters = [r["parameter"] for r in auth["secretTargetRef"]]
    assert parameters == [r["key"] for r in exported["taskq-redis"]["secretTargetRef"]]


def test_the_autoscaler_may_only_get_and_patch_the_worker_deployments_scale(rendered, topology):
    documents = rendered["autoscaler"]
    assert not of_kind(documents, "ScaledObject")
    role = of_kind(documents, "Role")["taskq-autoscaler"]
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "verbs": ["get", "patch"],
            "resourceNames": [f"taskq-worker-{g.name}" for g in topology.groups],
        }
    ]
    assert not of_kind(documents, "ClusterRole")
    autoscaler = of_kind(documents, "Deployment")["taskq-autoscaler"]
    assert containers(autoscaler)[0]["args"] == ["autoscale", "--kubernetes"]
    assert autoscaler["spec"]["template"]["spec"]["serviceAccountName"] == "taskq-autoscaler"
    tokens = [
        d["metadata"]["name"]
        for d in workloads(documents)
        if d["spec"]["template"]["spec"].get("automountServiceAccountToken") is not False
    ]
    assert tokens == ["taskq-autoscaler"]


def test_scaling_mode_none_runs_each_groups_minimum_and_no_scaler(rendered, topology):
    documents = rendered["minimal"]
    assert not of_kind(documents, "ScaledObject")
    assert not of_kind(documents, "Role")
    assert not of_kind(documents, "NetworkPolicy")
    assert not of_kind(documents, "ServiceAccount")
    deployments = of_kind(documents, "Deployment")
    assert "taskq-worker-github" not in deployments
    for group in topology.groups:
        if group.name != "github":
            replicas = deployments[f"taskq-worker-{group.name}"]["spec"]["replicas"]
            assert replicas == max(1, group.spec.scale.min)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_meets_the_restricted_pod_security_standard(rendered, profile):
    for workload in workloads(rendered[profile]):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]
            if workload["kind"] != "Deployment":
                continue
            assert container["livenessProbe"]
            assert container["readinessProbe"]


@pytest.mark.parametrize("profile", PROFILES)
def test_secrets_are_referenced_never_inlined(rendered, profile):
    documents = rendered[profile]
    assert not of_kind(documents, "Secret")
    secret_settings = {"TASKQ_AMQP_URL", "TASKQ_MANAGEMENT_URL", "TASKQ_STORE_URL"}
    for workload in workloads(documents):
        env = {e["name"]: e for e in containers(workload)[0]["env"]}
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        redis = profile.startswith("streams-") and component in ("stream", "autoscaler")
        for name in (
            secret_settings
            | ({"TASKQ_API_KEY_PEPPER"} if profile == "autoscaler" else set())
            | ({"TASKQ_REDIS_URL"} if redis else set())
        ):
            assert set(env[name]) == {"name", "valueFrom"}, (workload["metadata"]["name"], name)
            assert env[name]["valueFrom"]["secretKeyRef"]["name"]
        # Only the readers and the autoscaler reach Redis.
        assert ("TASKQ_REDIS_URL" in env) is redis, workload["metadata"]["name"]


def test_the_api_gets_an_ingress_with_tls_only_when_asked(rendered):
    assert not of_kind(rendered["default"], "Ingress")
    ingress = of_kind(rendered["keda"], "Ingress")["taskq-api"]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"hosts": ["jobs.example.org"], "secretName": "taskq-tls"}]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "taskq-api", "port": {"name": "http"}}
    no_tls = render({"api": {"ingress": {"enabled": True, "tls": {"enabled": False}}}})
    assert "tls" not in of_kind(no_tls, "Ingress")["taskq-api"]["spec"]


def test_the_grpc_api_gets_its_container_service_and_policy_ports_only_when_on(rendered):
    def ports(documents: list[dict[str, Any]]) -> tuple[Any, ...]:
        api = of_kind(documents, "Deployment")["taskq-api"]["spec"]["template"]["spec"]
        (container,) = api["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        service = of_kind(documents, "Service")["taskq-api"]["spec"]["ports"]
        policy = of_kind(documents, "NetworkPolicy")["taskq-api"]["spec"]["ingress"][0]["ports"]
        grpc = (env.get("TASKQ_GRPC"), env.get("TASKQ_GRPC_HOST"), env.get("TASKQ_GRPC_PORT"))
        return grpc, container["ports"], service, policy

    off = ports(rendered["default"])
    assert off[0] == (None, None, None)
    assert [p["name"] for p in off[1]] == ["http"]
    assert [p["name"] for p in off[2]] == ["http"]
    on = ports(render({"api": {"grpc": {"enabled": True, "port": 50052, "servicePort": 443}}}))
    assert on[0] == ("true", "0.0.0.0", "50052")
    assert {"name": "grpc", "containerPort": 50052} in on[1]
    assert {"name": "grpc", "port": 443, "targetPort": "grpc"} in on[2]
    assert {"protocol": "TCP", "port": 50052} in on[3]


def test_the_workload_identity_and_blob_store_reach_the_pods(rendered):
    documents = rendered["autoscaler"]
    account = of_kind(documents, "ServiceAccount")["taskq"]
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/t"
    }
    api = of_kind(documents, "Deployment")["taskq-api"]
    assert api["spec"]["template"]["spec"]["serviceAccountName"] == "taskq"
    env = {e["name"]: e.get("value") for e in containers(api)[0]["env"]}
    assert env["TASKQ_BLOB_URL"] == "s3://acme-taskq-payloads/taskq"
    assert env["TASKQ_S3_REGION"] == "eu-west-1"
    default_env = {
        e["name"]: e.get("value")
        for e in containers(of_kind(rendered["default"], "Deployment")["taskq-api"])[0]["env"]
    }
    assert default_env["TASKQ_CLAIM_CHECK_BYTES"] == "0"
    assert "TASKQ_BLOB_URL" not in default_env


def test_the_topology_is_applied_by_a_pre_install_and_pre_upgrade_job(rendered):
    documents = rendered["default"]
    job = of_kind(documents, "Job")["taskq-topology-apply"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert containers(job)[0]["args"] == ["topology", "apply"]
    volume = job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    hook_map = of_kind(documents, "ConfigMap")[volume]
    # The Job's ConfigMap is a hook too, created before the Job (a lower weight).
    assert int(hook_map["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    packaged = (ROOT / "topology" / "default.yaml").read_text(encoding="utf-8")
    assert hook_map["data"]["topology.yaml"] == packaged
    assert of_kind(documents, "ConfigMap")["taskq-topology"]["data"]["topology.yaml"] == packaged


def test_prometheus_rule_and_dashboards_are_grafanas_files(rendered):
    documents = rendered["keda"]
    rules = yaml.safe_load((ROOT / "grafana" / "rules" / "taskq-alerts.yaml").read_text())
    assert of_kind(documents, "PrometheusRule")["taskq"]["spec"] == rules
    dashboards = of_kind(documents, "ConfigMap")["taskq-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert sorted(dashboards["data"]) == [f.name for f in files]
    for file in files:
        assert json.loads(dashboards["data"][file.name]) == json.loads(file.read_text())
    monitor = of_kind(documents, "ServiceMonitor")["taskq"]["spec"]
    assert [e["port"] for e in monitor["endpoints"]] == ["http", "metrics"]


def test_network_policies_deny_by_default_and_open_the_api_and_metrics(rendered):
    policies = of_kind(rendered["default"], "NetworkPolicy")
    default = policies["taskq-default"]["spec"]
    assert default["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in default
    assert policies["taskq-api"]["spec"]["ingress"][0]["ports"] == [
        {"protocol": "TCP", "port": 8080}
    ]
    egress_ports = {p["port"] for rule in default["egress"] for p in rule["ports"]}
    assert {53, 5672, 5432, 443} <= egress_ports


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"scaling": {"mode": "hpa"}},
            "at '/scaling/mode': value must be one of 'autoscaler', 'keda', 'none'",
        ),
        (
            {"env": {"TASKQ_AMQP_URL": "amqp://u:p@h/"}},
            "at '/env/TASKQ_AMQP_URL': value must be '(a secret: set it in secretEnv",
        ),
        (
            {"secretEnv": {"TASKQ_STORE_URL": None}},
            "at '/secretEnv': missing property 'TASKQ_STORE_URL'",
        ),
        ({"api": {"replicas": "two"}}, "at '/api/replicas': got string, want integer"),
        ({"workers": {"resoures": {}}}, "additional properties 'resoures' not allowed"),
        (
            {"securityContext": {"readOnlyRootFilesystem": False}},
            "at '/securityContext/readOnlyRootFilesystem'",
        ),
        ({"blob": {"url": "ftp://x/y"}}, "at '/blob/url'"),
        (
            {"env": {"TASKQ_REDIS_URL": "redis://:p@h:6379/0"}},
            "at '/env/TASKQ_REDIS_URL': value must be '(a secret: set it as readers.redisUrl",
        ),
        (
            {"secretEnv": {"TASKQ_REDIS_URL": {"name": "taskq-redis", "key": "url"}}},
            "at '/secretEnv/TASKQ_REDIS_URL': value must be '(set it as readers.redisUrl",
        ),
        ({"readers": {"grace": 0}}, "at '/readers/grace': minimum: got 0, want 1"),
        ({"readers": {"redisUrl": {"name": "Taskq_Redis"}}}, "at '/readers/redisUrl/name'"),
        (
            {"scaling": {"keda": {"redis": {"enableTLS": "yes"}}}},
            "at '/scaling/keda/redis/enableTLS': got string, want boolean",
        ),
        ({"networkPolicy": {"redisPorts": [70000]}}, "at '/networkPolicy/redisPorts/0'"),
    ],
)
def test_a_wrong_value_fails_the_schema_with_a_message_naming_it(values, message):
    helm = require("helm_python")
    with pytest.raises(helm.HelmValuesError) as failure:
        render(values)
    assert message in str(failure.value)


def test_the_charts_topology_values_are_what_deploy_render_prints(topology):
    result = CliRunner().invoke(app, ["deploy", "render"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    chart = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert chart["topology"] == printed["topology"], (
        "deploy/helm/taskq/values.yaml is stale: replace its generated block with "
        "`taskctl deploy render -f topology/default.yaml`"
    )
    assert [g["name"] for g in printed["topology"]["groups"]] == [g.name for g in topology.groups]


def test_deploy_render_reads_the_named_file_and_writes_the_output(tmp_path):
    source = tmp_path / "topology.yaml"
    source.write_text(textwrap.dedent(MORE_GROUPS), encoding="utf-8")
    target = tmp_path / "values.yaml"
    result = CliRunner().invoke(app, ["deploy", "render", "-f", str(source), "-o", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Written by `taskctl deploy render`")
    values = yaml.safe_load(text)["topology"]
    assert values["file"] == source.read_text(encoding="utf-8")
    pay = next(g for g in values["groups"] if g["name"] == "pay")
    assert pay["queues"] == ["acme.pay.urgent", "acme.pay.high", "acme.pay.medium", "acme.pay.low"]
    assert pay["scale"] == {
        "min": 0,
        "max": 20,
        "backlogPerWorker": 40,
        "activation": 1,
        "cooldownSeconds": 60,
        "scaleDownWindowSeconds": 60,
    }


def test_deploy_render_refuses_an_invalid_topology(tmp_path):
    source = tmp_path / "topology.yaml"
    source.write_text("groups:\n  bad_name:\n    jobs: [x]\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["deploy", "render", "-f", str(source)])
    assert result.exit_code == 1
    assert "bad_name" in result.output


def test_one_reader_deployment_per_stream_source_each_pod_a_consumer_of_its_own(rendered):
    documents = rendered["streams-autoscaler"]
    deployments = of_kind(documents, "Deployment")
    readers = {n: d for n, d in deployments.items() if n.startswith("taskq-stream-")}
    assert set(readers) == {f"taskq-stream-{s}" for s in STREAM_SOURCES}
    worker = containers(deployments["taskq-worker-orders"])[0]
    for source, reader in ((n.removeprefix("taskq-stream-"), d) for n, d in readers.items()):
        (container,) = containers(reader)
        # The consumer name is the pod's: Kubernetes expands $(VAR) in args from the env.
        assert container["args"] == ["stream", source, "--consumer", "$(TASKQ_STREAM_CONSUMER)"]
        env = {e["name"]: e for e in container["env"]}
        assert env["TASKQ_STREAM_CONSUMER"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "metadata.name"}
        }
        assert env["TASKQ_REDIS_URL"]["valueFrom"] == {
            "secretKeyRef": {"name": "taskq-redis", "key": "url"}
        }
        assert container["securityContext"] == worker["securityContext"]
        assert container["volumeMounts"] == worker["volumeMounts"]
        assert container["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}
        # Its metrics port, probed as a worker's; checkov has nothing to waive.
        assert env["TASKQ_STREAM_METRICS_PORT"]["value"] == "9100"
        assert container["ports"] == [{"name": "metrics", "containerPort": 9100}]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe] == worker[probe]
        assert "annotations" not in reader["metadata"]
        pod = reader["spec"]["template"]
        assert pod["metadata"]["labels"]["taskq.io/stream"] == source
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert pod["spec"]["terminationGracePeriodSeconds"] == 30
        assert "replicas" not in reader["spec"]  # the autoscaler owns them
    budgets = of_kind(documents, "PodDisruptionBudget")
    assert set(readers) <= set(budgets)
    # The ServiceMonitor scrapes every reader through one Service, and the policy lets it in.
    service = of_kind(documents, "Service")["taskq-readers"]["spec"]
    assert service["selector"]["app.kubernetes.io/component"] == "stream"
    assert service["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics"}]
    metrics = of_kind(documents, "NetworkPolicy")["taskq-metrics"]["spec"]
    assert "stream" in metrics["podSelector"]["matchExpressions"][0]["values"]
    moved = render({**PROFILES["streams-autoscaler"], "readers": {"metricsPort": 9200}})
    ports = of_kind(moved, "NetworkPolicy")["taskq-metrics"]["spec"]["ingress"][0]["ports"]
    assert [p["port"] for p in ports] == [9100, 9464, 9200]
    # Per-source resources, as for groups.
    bigger = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    values = {
        **PROFILES["streams-autoscaler"],
        "readers": {"overrides": {"shop": {"resources": bigger}}},
    }
    shop = of_kind(render(values), "Deployment")["taskq-stream-shop"]
    assert containers(shop)[0]["resources"] == bigger


def test_the_autoscaler_may_also_scale_the_reader_deployments_and_reach_redis(rendered):
    documents = rendered["streams-autoscaler"]
    (rule,) = of_kind(documents, "Role")["taskq-autoscaler"]["rules"]
    assert rule["resources"] == ["deployments/scale"]
    assert rule["verbs"] == ["get", "patch"]
    topology = compile_topology(parse_topology(WITH_STREAMS))
    assert rule["resourceNames"] == [
        *(f"taskq-worker-{g.name}" for g in topology.groups),
        "taskq-stream-audit",
        "taskq-stream-shop",
    ]
    autoscaler = containers(of_kind(documents, "Deployment")["taskq-autoscaler"])[0]
    env = {e["name"]: e for e in autoscaler["env"]}
    assert env["TASKQ_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "taskq-redis",
        "key": "url",
    }
    policy = of_kind(documents, "NetworkPolicy")["taskq-redis"]["spec"]
    assert policy["policyTypes"] == ["Egress"]
    assert policy["egress"] == [
        {"ports": [{"protocol": "TCP", "port": 6379}, {"protocol": "TCP", "port": 6380}]}
    ]
    (selects,) = policy["podSelector"]["matchExpressions"]
    assert selects["values"] == ["stream", "autoscaler"]
    assert not of_kind(documents, "ScaledObject")


def test_keda_scales_each_source_on_its_groups_lag_and_pending_entries(rendered):
    documents = rendered["streams-keda"]
    topology = compile_topology(parse_topology(WITH_STREAMS))
    scaled = of_kind(documents, "ScaledObject")
    assert {n for n in scaled if n.startswith("taskq-stream-")} == {
        f"taskq-stream-{s}" for s in STREAM_SOURCES
    }
    for source, spec in topology.streams:
        document = scaled[f"taskq-stream-{source}"]
        validate_manifest(document)
        object_spec = document["spec"]
        assert object_spec["scaleTargetRef"]["name"] == f"taskq-stream-{source}"
        assert (object_spec["minReplicaCount"], object_spec["maxReplicaCount"]) == (
            spec.scale.min,
            spec.scale.max,
        )
        window = spec.scale.stabilization // 1000
        assert object_spec["cooldownPeriod"] == window
        behavior = object_spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == window
        where = {
            "stream": spec.stream,
            "consumerGroup": spec.group,
            "enableTLS": "false",
            "databaseIndex": "0",
        }
        per_reader = str(spec.scale.backlog_per_worker)
        assert object_spec["triggers"] == [
            {
                "type": "redis-streams",
                "metadata": {
                    **where,
                    "lagCount": per_reader,
                    "activationLagCount": str(spec.scale.activation),
                },
                "authenticationRef": {"name": "taskq-redis"},
            },
            {
                "type": "redis-streams",
                "metadata": {**where, "pendingEntriesCount": per_reader},
                "authenticationRef": {"name": "taskq-redis"},
            },
        ]
        assert (spec.stream, spec.group) == STREAM_SOURCES[source]
    auth = of_kind(documents, "TriggerAuthentication")["taskq-redis"]
    validate_manifest(auth)
    assert auth["spec"] == {
        "secretTargetRef": [
            {"parameter": "address", "name": "taskq-redis", "key": "address"},
            {"parameter": "password", "name": "taskq-redis", "key": "password"},
        ]
    }
    # The groups' ScaledObjects stay the export's, beside the readers'.
    assert {f"taskq-worker-{g.name}" for g in topology.groups} < set(scaled)


def test_keda_reaches_a_redis_without_password_over_tls_in_another_database():
    redis = {
        "secret": "cache",
        "addressKey": "host-port",
        "passwordKey": "",
        "enableTLS": True,
        "databaseIndex": 3,
    }
    values = {**streams_values(), "scaling": {"mode": "keda", "keda": {"redis": redis}}}
    documents = render(values)
    auth = of_kind(documents, "TriggerAuthentication")["taskq-redis"]["spec"]
    assert auth == {
        "secretTargetRef": [{"parameter": "address", "name": "cache", "key": "host-port"}]
    }
    for trigger in of_kind(documents, "ScaledObject")["taskq-stream-shop"]["spec"]["triggers"]:
        assert (trigger["metadata"]["enableTLS"], trigger["metadata"]["databaseIndex"]) == (
            "true",
            "3",
        )


def test_scaling_mode_none_runs_each_sources_minimum_and_a_disabled_source_none(rendered):
    documents = rendered["streams-none"]
    deployments = of_kind(documents, "Deployment")
    assert "taskq-stream-shop" not in deployments
    assert deployments["taskq-stream-audit"]["spec"]["replicas"] == 2  # consumers: 2
    assert not of_kind(documents, "ScaledObject")


def test_without_stream_sources_no_reader_runs_and_nothing_reaches_redis(rendered):
    for profile in ("default", "keda"):
        documents = rendered[profile]
        assert not [d for d in documents if d["metadata"]["name"].startswith("taskq-stream-")]
        assert "taskq-redis" not in of_kind(documents, "NetworkPolicy")
        assert "taskq-redis" not in of_kind(documents, "TriggerAuthentication")


def test_deploy_render_prints_each_stream_source(tmp_path):
    source = tmp_path / "topology.yaml"
    source.write_text(WITH_STREAMS, encoding="utf-8")
    result = CliRunner().invoke(app, ["deploy", "render", "-f", str(source)])
    assert result.exit_code == 0, result.output
    streams = yaml.safe_load(result.stdout)["topology"]["streams"]
    assert streams == [
        {
            "name": "audit",
            "deployment": "taskq-stream-audit",
            "stream": "audit",
            "group": "readers",
            "scale": {
                "min": 2,
                "max": 4,
                "backlogPerWorker": 1000,
                "activation": 1,
                "cooldownSeconds": 60,
                "scaleDownWindowSeconds": 60,
            },
        },
        {
            "name": "shop",
            "deployment": "taskq-stream-shop",
            "stream": "shop:orders",
            "group": "taskq",
            "scale": {
                "min": 1,
                "max": 6,
                "backlogPerWorker": 500,
                "activation": 1,
                "cooldownSeconds": 120,
                "scaleDownWindowSeconds": 120,
            },
        },
    ]


def test_a_stream_source_that_cannot_name_a_deployment_is_refused():
    text = WITH_STREAMS.replace("  audit:\n", "  audit_feed:\n")
    with pytest.raises(
        TopologyError, match=r"stream source 'audit_feed'.*'taskq-stream-audit_feed'"
    ):
        topology_values(text)
