"""The topology for other tools: RabbitMQ definitions JSON, a Mermaid diagram, KEDA manifests and Helm values."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from topology import names
from topology.compiled import Binding, CompiledGroup, CompiledTopology, Exchange, Queue
from topology.errors import TopologyError
from topology.spec import ScaleSpec, StreamSourceSpec


def export_definitions(topology: CompiledTopology, *, vhost: str = "/") -> dict[str, Any]:
    """Return definitions that declare exactly the exchanges, queues and bindings of ``topology``."""

    def entry(obj: Exchange | Queue | Binding) -> dict[str, Any]:
        return {**asdict(obj), "vhost": vhost, "arguments": dict(obj.arguments)}

    return {
        "vhosts": [{"name": vhost}],
        "exchanges": [entry(e) for e in topology.exchanges],
        "queues": [entry(q) for q in topology.queues],
        "bindings": [entry(b) for b in topology.bindings],
    }


def mermaid(topology: CompiledTopology) -> str:
    """Return a Mermaid ``flowchart LR`` of every exchange, queue and binding."""
    lines = ["flowchart LR"]
    for exchange in topology.exchanges:
        lines.append(f'  {_id(exchange.name)}{{{{"{exchange.name}<br/><i>{exchange.type}</i>"}}}}')
    for queue in topology.queues:
        extra = dict(queue.arguments)
        notes = [queue.queue_type]
        if "x-max-priority" in extra:
            notes.append(f"priority 0-{extra['x-max-priority']}")
        if "x-message-ttl" in extra and queue.name.startswith(f"{topology.namespace}.delay."):
            notes.append(f"TTL {extra['x-message-ttl']}ms")
        lines.append(f'  {_id(queue.name)}[("{queue.name}<br/><i>{", ".join(notes)}</i>")]')
    for binding in topology.bindings:
        label = binding.routing_key or ", ".join(
            f"{k}={v}" for k, v in binding.arguments if k != "x-match"
        )
        edge = f' -- "{label}" --> ' if label else " --> "
        lines.append(f"  {_id(binding.source)}{edge}{_id(binding.destination)}")
    for queue in topology.queues:
        dlx = dict(queue.arguments).get("x-dead-letter-exchange")
        if dlx:
            kind = "expires" if "x-message-ttl" in dict(queue.arguments) else "dead letters"
            lines.append(f'  {_id(queue.name)} -. "{kind}" .-> {_id(str(dlx))}')
    return "\n".join(lines) + "\n"


def _id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


KEDA_API_VERSION = "keda.sh/v1alpha1"
HPA_MAX_WINDOW_SECONDS = 3600  # the HPA refuses a longer stabilization window
DAY_MS = 86_400_000
# A Deployment name ends up in pod names and labels: an RFC 1123 label is the safe form.
KUBERNETES_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class KedaOptions:
    """Where the manifests go, how KEDA reaches RabbitMQ's management API, and how it reaches the stream sources' Redis."""

    namespace: str | None = None  # None: the namespace kubectl applies them to
    vhost: str = "/"
    polling_interval: int = 15  # seconds between two looks at the queues and streams
    authentication: str = "taskq-rabbitmq"  # the TriggerAuthentication every rabbitmq trigger uses
    secret: str = "taskq-rabbitmq"  # the Secret whose key ``host`` holds the management URL
    trigger_authentication: bool = True  # also write the TriggerAuthentications
    redis_authentication: str = "taskq-redis"  # the one every redis-streams trigger uses
    # The Secret whose keys ``address`` (host:port) and ``password`` KEDA reads: it takes no URL.
    redis_secret: str = "taskq-redis"
    redis_password: bool = True  # False: Redis wants no password, the Secret has no such key
    redis_tls: bool = False  # as ``rediss://`` in TASKQ_REDIS_URL
    redis_database: int = 0  # the database of TASKQ_REDIS_URL


def keda_manifests(
    topology: CompiledTopology, options: KedaOptions | None = None
) -> list[dict[str, Any]]:
    """Return the TriggerAuthentications (unless turned off), then one ScaledObject per group and one per stream source."""
    options = options or KedaOptions()
    # The Secret's ``host`` key goes to every rabbitmq trigger as the scaler's ``host``, and
    # Redis's ``address`` (and ``password``) to every redis-streams trigger.
    auths = [_authentication(options.authentication, options.secret, ("host",), options)]
    if topology.streams:
        keys = ("address", "password") if options.redis_password else ("address",)
        redis = options.redis_authentication
        auths.append(_authentication(redis, options.redis_secret, keys, options))
    scaled = [scaled_object(group, options) for group in topology.groups]
    scaled += [stream_scaled_object(name, spec, options) for name, spec in topology.streams]
    return [*auths, *scaled] if options.trigger_authentication else scaled


def _authentication(
    name: str, secret: str, keys: tuple[str, ...], options: KedaOptions
) -> dict[str, Any]:
    refs = [{"parameter": key, "name": secret, "key": key} for key in keys]
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "TriggerAuthentication",
        "metadata": _metadata(name, options),
        "spec": {"secretTargetRef": refs},
    }


def scaled_object(group: CompiledGroup, options: KedaOptions) -> dict[str, Any]:
    """Return the ScaledObject that scales the Deployment of ``group`` on its work queues."""
    worker = worker_values(group)
    scale = worker["scale"]
    triggers = [
        {
            "type": "rabbitmq",
            "metadata": {
                "protocol": "http",
                "mode": "QueueLength",
                "value": str(scale["backlogPerWorker"]),
                "activationValue": str(scale["activation"]),
                "queueName": queue,
                "vhostName": options.vhost,
            },
            "authenticationRef": {"name": options.authentication},
        }
        for queue in worker["queues"]
    ]
    return _scaled_object(worker["deployment"], scale, triggers, options)


def stream_scaled_object(name: str, spec: StreamSourceSpec, options: KedaOptions) -> dict[str, Any]:
    """Return the ScaledObject that scales the readers of stream source ``name`` on its consumer group's lag and pending entries."""
    reader = stream_values(name, spec)
    scale = reader["scale"]
    where = {
        "stream": reader["stream"],
        "consumerGroup": reader["group"],
        "enableTLS": str(options.redis_tls).lower(),
        "databaseIndex": str(options.redis_database),
    }
    per_reader = str(scale["backlogPerWorker"])
    # The HPA follows the larger of the two wishes: entries not yet read (lag, which needs
    # Redis 7) and entries read but not acknowledged (pending).
    counts = (
        {"lagCount": per_reader, "activationLagCount": str(scale["activation"])},
        {"pendingEntriesCount": per_reader},
    )
    triggers = [
        {
            "type": "redis-streams",
            "metadata": {**where, **count},
            "authenticationRef": {"name": options.redis_authentication},
        }
        for count in counts
    ]
    return _scaled_object(reader["deployment"], scale, triggers, options)


def _scaled_object(
    deployment: str, scale: dict[str, int], triggers: list[dict[str, Any]], options: KedaOptions
) -> dict[str, Any]:
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": _metadata(deployment, options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicaCount": scale["min"],
            "maxReplicaCount": scale["max"],
            "pollingInterval": options.polling_interval,
            # cooldownPeriod only governs the last step to zero (min: 0); the HPA's scale-down
            # window governs every other step, so both get the group's or source's stabilization.
            "cooldownPeriod": scale["cooldownSeconds"],
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {"stabilizationWindowSeconds": scale["scaleDownWindowSeconds"]}
                    }
                }
            },
            "triggers": triggers,
        },
    }


def worker_values(group: CompiledGroup) -> dict[str, Any]:
    """Return what a deployment of ``group``'s workers needs: its Deployment, queues, sizing and scaling thresholds."""
    spec = group.spec
    return {
        "name": group.name,
        "deployment": _deployment(group.name, names.worker_deployment(group.name), "group"),
        "queues": list(group.queue_names),
        "concurrency": spec.concurrency,
        "prefetch": spec.prefetch,
        # A draining worker may still be running a job this long after SIGTERM.
        "timeoutSeconds": math.ceil(spec.timeout / 1000),
        "scale": _scale_values(spec.scale),
    }


def stream_values(name: str, spec: StreamSourceSpec) -> dict[str, Any]:
    """Return what a deployment of a stream source's readers needs: its Deployment, stream, consumer group and scaling thresholds."""
    return {
        "name": name,
        "deployment": _deployment(name, names.stream_deployment(name), "stream source"),
        "stream": spec.stream,
        "group": spec.group,
        "scale": _scale_values(spec.scale),
    }


def _scale_values(scale: ScaleSpec) -> dict[str, int]:
    stabilization = math.ceil(scale.stabilization / 1000)
    return {
        "min": scale.min,
        "max": scale.max,
        "backlogPerWorker": scale.backlog_per_worker,
        "activation": scale.activation,
        "cooldownSeconds": stabilization,
        "scaleDownWindowSeconds": min(stabilization, HPA_MAX_WINDOW_SECONDS),
    }


def chart_values(
    topology: CompiledTopology, text: str, *, max_delay: float, orphan_grace: float
) -> dict[str, Any]:
    """Return the Helm chart's ``topology`` values: the file ``text``, one worker entry per group, one reader entry per stream source, and the blobs' lifetime."""
    # The groups are a list, not a map: a values file replaces the chart's groups, not merges.
    return {
        "topology": {
            "namespace": topology.namespace,
            "file": text,
            "groups": [worker_values(group) for group in topology.groups],
            "streams": [stream_values(name, spec) for name, spec in topology.streams],
            "blobRetentionDays": blob_retention_days(
                topology, max_delay=max_delay, orphan_grace=orphan_grace
            ),
        }
    }


def blob_retention_days(
    topology: CompiledTopology, *, max_delay: float, orphan_grace: float
) -> int | None:
    """Return the days after which a bucket may expire a blob taskq could still need (``None``: never safe)."""
    # The longest wait, every attempt and backoff, the longest keeping and an orphan's grace: a
    # backstop, since the retention sweep deletes each blob with its job.
    longest = 0
    for group in topology.groups:
        spec = group.spec
        if spec.dlq.retention is None:
            return None
        attempts = spec.retry.max_attempts
        running = sum(spec.retry.delay_ms(k) for k in range(1, attempts)) + attempts * spec.timeout
        longest = max(longest, running + max(spec.retention, spec.dlq.retention))
    return math.ceil((longest + (max_delay + orphan_grace) * 1000) / DAY_MS)


def _metadata(name: str, options: KedaOptions) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "taskq"}}
    if options.namespace:
        metadata["namespace"] = options.namespace
    return metadata


def _deployment(name: str, deployment: str, kind: str) -> str:
    if not KUBERNETES_NAME_RE.fullmatch(deployment):
        raise TopologyError(
            f"{kind} {name!r} would be scaled as the Deployment {deployment!r}, which is not a "
            "valid Kubernetes name (lowercase letters, digits and '-', at most 63 characters): "
            f"rename the {kind} without '_'"
        )
    return deployment
