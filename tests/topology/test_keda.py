import textwrap
from types import SimpleNamespace

import jsonschema
import pytest

from tests.deploy.chart import WITH_STREAMS
from tests.keda_schemas import validate_keda as validate
from topology.compiled import CompiledGroup, CompiledTopology, compile_topology
from topology.errors import TopologyError
from topology.export import KedaOptions, keda_manifests, scaled_object
from topology.loader import parse_topology

TOPOLOGY = """
namespace: acme
groups:
  email:
    jobs: [email]
    scale: {min: 1, max: 8, backlog_per_worker: 250}
  pay:
    jobs: ["pay.#"]
    priority: {strategy: lanes, queue_type: quorum}
    scale: {min: 0, max: 20, backlog_per_worker: 40}
"""


def compiled(text: str = TOPOLOGY) -> CompiledTopology:
    return compile_topology(parse_topology(textwrap.dedent(text)))


def by_name(manifests: list[dict]) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ScaledObject"}


def test_every_document_is_valid_against_the_crd_schemas(topology):
    for options in (KedaOptions(), KedaOptions(namespace="jobs", vhost="prod")):
        for source in (topology, compiled()):
            manifests = keda_manifests(source, options)
            assert [m["kind"] for m in manifests].count("TriggerAuthentication") == 1
            for manifest in manifests:
                validate(manifest)


def test_one_scaled_object_per_group_with_the_groups_thresholds(topology):
    objects = by_name(keda_manifests(topology))
    assert set(objects) == {f"taskq-worker-{g.name}" for g in topology.groups}
    for group in topology.groups:
        spec = objects[f"taskq-worker-{group.name}"]["spec"]
        assert spec["scaleTargetRef"]["name"] == f"taskq-worker-{group.name}"
        assert spec["minReplicaCount"] == group.spec.scale.min
        assert spec["maxReplicaCount"] == group.spec.scale.max
        assert [t["metadata"]["queueName"] for t in spec["triggers"]] == list(group.queue_names)
        for trigger in spec["triggers"]:
            assert trigger["type"] == "rabbitmq"
            assert trigger["metadata"]["value"] == str(group.spec.scale.backlog_per_worker)
            assert trigger["metadata"]["mode"] == "QueueLength"
            assert trigger["metadata"]["protocol"] == "http"
            assert trigger["authenticationRef"] == {"name": "taskq-rabbitmq"}


def test_a_lanes_group_gets_one_trigger_per_lane_queue():
    pay = by_name(keda_manifests(compiled()))["taskq-worker-pay"]["spec"]
    queues = [t["metadata"]["queueName"] for t in pay["triggers"]]
    assert queues == ["acme.pay.urgent", "acme.pay.high", "acme.pay.medium", "acme.pay.low"]
    assert {t["metadata"]["value"] for t in pay["triggers"]} == {"40"}
    assert (pay["minReplicaCount"], pay["maxReplicaCount"]) == (0, 20)


def test_dead_letter_queues_and_delay_tiers_never_get_a_trigger(topology):
    for source in (topology, compiled()):
        queues = [
            t["metadata"]["queueName"]
            for m in keda_manifests(source)
            if m["kind"] == "ScaledObject"
            for t in m["spec"]["triggers"]
        ]
        assert queues
        assert not [q for q in queues if q.endswith(".dlq") or ".delay." in q]
        assert set(queues) <= {q for g in source.groups for q in g.queue_names}


def test_options_reach_every_document():
    options = KedaOptions(
        namespace="jobs", vhost="prod", polling_interval=5, authentication="rmq", secret="creds"
    )
    manifests = keda_manifests(compiled(), options)
    assert {m["metadata"]["namespace"] for m in manifests} == {"jobs"}
    auth = manifests[0]
    assert auth["metadata"]["name"] == "rmq"
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "creds", "key": "host"}
    ]
    for scaled in manifests[1:]:
        assert scaled["spec"]["pollingInterval"] == 5
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["metadata"]["vhostName"] == "prod"
            assert trigger["authenticationRef"] == {"name": "rmq"}


def test_the_trigger_authentication_can_be_left_out():
    source = compiled()
    manifests = keda_manifests(source, KedaOptions(trigger_authentication=False))
    assert [m["kind"] for m in manifests] == ["ScaledObject"] * len(source.groups)
    assert "namespace" not in manifests[0]["metadata"]


def test_defaults_until_scale_spec_has_activation_and_stabilization():
    spec = by_name(keda_manifests(compiled()))["taskq-worker-email"]["spec"]
    assert spec["triggers"][0]["metadata"]["activationValue"] == "1"
    assert spec["cooldownPeriod"] == 60
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 60


def with_scale(group: CompiledGroup, **scale: int) -> CompiledGroup:
    # Stands in for a ScaleSpec with the activation and stabilization fields being added.
    spec = group.spec.model_copy(update={"scale": SimpleNamespace(**scale)})
    return CompiledGroup(group.name, spec, group.work_queues, group.dead_letter_queue)


def test_activation_and_stabilization_are_read_when_scale_spec_has_them():
    email = compiled().group("email")
    group = with_scale(
        email, min=0, max=3, backlog_per_worker=100, activation=25, stabilization=90_500
    )
    document = scaled_object(group, KedaOptions())
    validate(document)
    spec = document["spec"]
    assert spec["triggers"][0]["metadata"]["activationValue"] == "25"
    assert spec["cooldownPeriod"] == 91  # seconds, rounded up
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 91


def test_a_stabilization_above_an_hour_caps_only_the_hpa_window():
    email = compiled().group("email")
    group = with_scale(
        email, min=0, max=3, backlog_per_worker=100, activation=1, stabilization=7_200_000
    )
    document = scaled_object(group, KedaOptions())
    validate(document)
    assert document["spec"]["cooldownPeriod"] == 7200
    behavior = document["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 3600


def test_a_group_name_kubernetes_refuses_is_a_topology_error():
    source = compiled("groups:\n  bulk_mail: {jobs: [bulk]}\n")
    with pytest.raises(TopologyError, match=r"'taskq-worker-bulk_mail'.*rename the group"):
        keda_manifests(source)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["spec"]["scaleTargetRef"].pop("name"),
        lambda d: d["spec"].pop("triggers"),
        lambda d: d["spec"]["triggers"][0].pop("type"),
        lambda d: d["spec"]["triggers"][0]["metadata"].update(value=500),
        lambda d: d["spec"].update(minReplicaCount="1"),
        lambda d: d["spec"].update(maxReplicas=4),
        lambda d: d["spec"]["triggers"][0]["authenticationRef"].pop("name"),
        lambda d: d["metadata"].update(name="taskq-worker-bulk_mail"),
    ],
)
def test_the_schema_refuses_what_the_crd_refuses(breakage):
    document = scaled_object(compiled().group("email"), KedaOptions())
    breakage(document)
    with pytest.raises(jsonschema.ValidationError):
        validate(document)


def test_each_stream_source_is_scaled_on_its_groups_lag_and_pending_entries():
    source = compiled(WITH_STREAMS)
    manifests = keda_manifests(source)
    scaled = ["ScaledObject"] * (len(source.groups) + 2)
    assert [m["kind"] for m in manifests] == ["TriggerAuthentication"] * 2 + scaled
    for manifest in manifests:
        validate(manifest)
    redis = manifests[1]
    assert redis["metadata"]["name"] == "taskq-redis"
    assert redis["spec"]["secretTargetRef"] == [
        {"parameter": "address", "name": "taskq-redis", "key": "address"},
        {"parameter": "password", "name": "taskq-redis", "key": "password"},
    ]
    shop = by_name(manifests)["taskq-stream-shop"]["spec"]
    assert shop["scaleTargetRef"]["name"] == "taskq-stream-shop"
    assert (shop["minReplicaCount"], shop["maxReplicaCount"], shop["cooldownPeriod"]) == (1, 6, 120)
    where = {
        "stream": "shop:orders",
        "consumerGroup": "taskq",
        "enableTLS": "false",
        "databaseIndex": "0",
    }
    assert shop["triggers"] == [
        {
            "type": "redis-streams",
            "metadata": {**where, "lagCount": "500", "activationLagCount": "1"},
            "authenticationRef": {"name": "taskq-redis"},
        },
        {
            "type": "redis-streams",
            "metadata": {**where, "pendingEntriesCount": "500"},
            "authenticationRef": {"name": "taskq-redis"},
        },
    ]
    audit = by_name(manifests)["taskq-stream-audit"]["spec"]
    assert {t["metadata"]["consumerGroup"] for t in audit["triggers"]} == {"readers"}


def test_redis_options_reach_the_stream_sources_documents():
    options = KedaOptions(
        namespace="jobs",
        redis_authentication="cache-auth",
        redis_secret="cache",
        redis_password=False,
        redis_tls=True,
        redis_database=3,
    )
    source = compiled(WITH_STREAMS)
    manifests = keda_manifests(source, options)
    for manifest in manifests:
        validate(manifest)
        assert manifest["metadata"]["namespace"] == "jobs"
    redis = manifests[1]
    assert redis["metadata"]["name"] == "cache-auth"
    assert redis["spec"]["secretTargetRef"] == [
        {"parameter": "address", "name": "cache", "key": "address"}
    ]
    for trigger in by_name(manifests)["taskq-stream-shop"]["spec"]["triggers"]:
        assert (trigger["metadata"]["enableTLS"], trigger["metadata"]["databaseIndex"]) == (
            "true",
            "3",
        )
        assert trigger["authenticationRef"] == {"name": "cache-auth"}
    without = keda_manifests(source, KedaOptions(trigger_authentication=False))
    assert [m["kind"] for m in without] == ["ScaledObject"] * (len(source.groups) + 2)


def test_a_stream_source_name_kubernetes_refuses_is_a_topology_error():
    source = compiled(
        "groups:\n  paid: {jobs: [order.paid]}\n"
        "streams:\n  big_shop: {stream: s, job: order.paid}\n"
    )
    with pytest.raises(TopologyError, match=r"'taskq-stream-big_shop'.*rename the stream source"):
        keda_manifests(source)
