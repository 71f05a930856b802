"""The topology file as validated value objects: namespace, delay tiers, consumer groups, webhook and stream sources."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from topology import limits, names
from topology.durations import Duration, format_duration

# Re-exported: Priority was defined here first, and the whole codebase imports it from here.
from topology.names import MAX_PRIORITY as MAX_PRIORITY
from topology.names import Priority as Priority
from topology.schedules import ScheduleSpec

# RabbitMQ closes the channel of a consumer that holds a delivery longer than
# consumer_timeout (30 min by default, https://www.rabbitmq.com/docs/consumers#acknowledgement-timeout),
# so a handler timeout at or above it would turn every slow job into a channel error.
CONSUMER_TIMEOUT_MS = 30 * 60 * 1000


class _Spec(BaseModel):
    """Base of every spec: frozen, comparable, and strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Jitter(StrEnum):
    """How a retry delay is randomised (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/)."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"


class PriorityStrategy(StrEnum):
    """How a group keeps urgent work ahead: one priority queue, or one queue per lane."""

    QUEUE = "queue"
    LANES = "lanes"


class QueueType(StrEnum):
    """The RabbitMQ queue type of a group's work queues."""

    CLASSIC = "classic"
    QUORUM = "quorum"


class RetryPolicy(_Spec):
    """Exponential backoff with jitter, bounded by a number of attempts."""

    max_attempts: Annotated[int, Field(ge=1, le=1000)]
    base: Duration
    factor: Annotated[float, Field(ge=1.0, le=16.0)]
    max: Duration
    jitter: Jitter

    @field_validator("base")
    @classmethod
    def _positive_base(cls, base: int) -> int:
        if base <= 0:
            raise ValueError("base must be above zero; a retry needs some delay (e.g. base: 1s)")
        return base

    @field_validator("max")
    @classmethod
    def _max_above_base(cls, value: int, info: ValidationInfo) -> int:
        base = info.data.get("base")
        if base is not None and value < base:
            raise ValueError(
                f"max ({format_duration(value)}) is below base ({format_duration(base)}); "
                "raise max or lower base"
            )
        return value

    def delay_ms(self, attempt: int) -> int:
        """Return the delay before retry number ``attempt`` (1-based), before jitter."""
        raw = self.base * self.factor ** max(attempt - 1, 0)
        return int(min(raw, self.max))


class PrioritySpec(_Spec):
    """The priority strategy of a group and the queue type it uses."""

    strategy: PriorityStrategy = PriorityStrategy.QUEUE
    queue_type: QueueType = QueueType.CLASSIC
    # How many nodes hold each of the group's quorum queues (None: every node of the cluster).
    replicas: Annotated[int, Field(ge=1, le=99)] | None = None

    @model_validator(mode="after")
    def _supported(self) -> Self:
        if self.strategy is PriorityStrategy.QUEUE and self.queue_type is QueueType.QUORUM:
            raise ValueError(
                "a quorum queue keeps no priorities before RabbitMQ 4.0 and two after; use "
                "strategy: lanes with queue_type: quorum, or queue_type: classic"
            )
        if self.replicas is not None and self.queue_type is not QueueType.QUORUM:
            raise ValueError(
                "replicas applies to quorum queues only (a classic queue lives on one node); "
                "add queue_type: quorum or remove replicas"
            )
        return self


class DlqSpec(_Spec):
    """How long dead letters are kept (``null``: until replayed or purged), and how many at most."""

    retention: Duration | None = None
    # Declared as x-max-length with x-overflow reject-publish: a full DLQ refuses dead letters,
    # which then stay on their work queue (never dropped) until there is room.
    max_length: Annotated[int, Field(ge=1)] = 100_000


# Kubernetes caps the HPA's stabilizationWindowSeconds at one hour too; a longer window
# keeps a group at its peak size for hours after every burst.
MAX_STABILIZATION_MS = 60 * 60 * 1000


class ScaleSpec(_Spec):
    """Autoscaling bounds of a group, the backlog one worker carries, and how it wakes and settles."""

    min: Annotated[int, Field(ge=0, le=1000)]
    max: Annotated[int, Field(ge=1, le=1000)]
    backlog_per_worker: Annotated[int, Field(ge=1)]
    # With min 0: the backlog (ready + unacked) that wakes the group from zero workers.
    activation: Annotated[int, Field(ge=0)] = 1
    # Scale down only to the highest recommendation of this window, so a dip never flaps.
    stabilization: Duration = 60_000

    @field_validator("stabilization")
    @classmethod
    def _bounded_window(cls, value: int) -> int:
        if value > MAX_STABILIZATION_MS:
            raise ValueError(
                f"stabilization {format_duration(value)} is above 1h; a group would keep its "
                "peak size for that long after every burst, so lower it"
            )
        return value

    @field_validator("max")
    @classmethod
    def _ordered(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min")
        if low is not None and value < low:
            raise ValueError(f"max ({value}) is below min ({low}); raise max")
        return value


class GroupSpec(_Spec):
    """One consumer group: the job types it takes and how its workers run them."""

    jobs: Annotated[tuple[str, ...], Field(min_length=1)]
    prefetch: Annotated[int, Field(ge=1, le=65535)]
    concurrency: Annotated[int, Field(ge=1, le=10000)]
    timeout: Duration
    retry: RetryPolicy
    priority: PrioritySpec
    dlq: DlqSpec
    scale: ScaleSpec
    # How long a finished job (succeeded, failed, dead, cancelled), its result and its blob are
    # kept in the job store before the retention sweep deletes them.
    retention: Duration
    # Where the group's jobs report their end when a job names no callback_url of its own.
    callback_url: limits.CallbackUrl | None = None

    @field_validator("jobs")
    @classmethod
    def _valid_job_types(cls, jobs: tuple[str, ...]) -> tuple[str, ...]:
        for job in jobs:
            problem = limits.job_type_problem(job, allow_wildcards=True)
            if problem:
                raise ValueError(problem)
        seen = {j for j in jobs if jobs.count(j) > 1}
        if seen:
            raise ValueError(f"{sorted(seen)} listed more than once; list each job type once")
        return jobs

    @field_validator("concurrency")
    @classmethod
    def _within_prefetch(cls, value: int, info: ValidationInfo) -> int:
        prefetch = info.data.get("prefetch")
        if prefetch is not None and value > prefetch:
            raise ValueError(
                f"concurrency ({value}) exceeds prefetch ({prefetch}); a worker never holds "
                "more than prefetch jobs, so raise prefetch or lower concurrency"
            )
        return value

    @field_validator("retention")
    @classmethod
    def _a_second_at_least(cls, value: int) -> int:
        if value < 1000:
            raise ValueError(
                f"retention {format_duration(value)} is below 1s; a finished job would be gone "
                "before anyone could read its result"
            )
        return value

    @field_validator("timeout")
    @classmethod
    def _below_consumer_timeout(cls, value: int) -> int:
        if not 0 < value < CONSUMER_TIMEOUT_MS:
            raise ValueError(
                f"timeout {format_duration(value)} must be above 0 and below RabbitMQ's "
                "30m consumer_timeout, which would close the channel first"
            )
        return value


class DelaySpec(_Spec):
    """The delay tiers: queues holding messages for resolution x 2^k, up to ``longest``."""

    resolution: Duration = 1000
    longest: Duration = 65_536_000

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.resolution < 10:
            raise ValueError("resolution must be at least 10ms; the broker's TTL is not finer")
        if self.longest < self.resolution:
            raise ValueError("longest is below resolution; raise longest")
        if self.longest // self.resolution > 2**24:
            raise ValueError("longest / resolution is above 2^24; that many tiers is absurd")
        return self

    def tiers(self) -> tuple[int, ...]:
        """Return the tier lengths in milliseconds, shortest first: resolution x 2^k up to longest."""
        doublings = (self.longest // self.resolution).bit_length()
        return tuple(self.resolution << k for k in range(doublings))


EVENT = "{event}"
SAMPLE_EVENT = "push"  # stands in for the event when a template is checked at load time


class WebhookScheme(StrEnum):
    """How a sender signs its deliveries."""

    GITHUB = "github"  # X-Hub-Signature-256, X-GitHub-Event, X-GitHub-Delivery
    STRIPE = "stripe"  # Stripe-Signature: t=...,v1=...; event id and type from the body
    STANDARD = "standard"  # Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature
    HMAC = "hmac"  # a configurable HMAC header (and optional timestamp, id and event headers)


HMAC_ONLY = ("header", "timestamp_header", "id_header", "event_header")
"""Keys that only the ``hmac`` scheme takes (the others fix their own headers)."""


# One name stands for a list of one (``secret_env: X`` or ``secret_env: [X, Y]``).
NameList = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v)]


class _SourceSpec(_Spec):
    """What a webhook and a stream source share: the job type, or ``{event}`` template, each event makes."""

    job: str
    priority: Priority = Priority.MEDIUM

    @field_validator("job")
    @classmethod
    def _template(cls, job: str) -> str:
        words = job.split(".")
        if any(EVENT in word and word != EVENT for word in words) or words.count(EVENT) > 1:
            # The types a template makes must form a topic pattern, so they can be reserved.
            raise ValueError(
                f"job {job!r}: {EVENT} must be a whole dot-separated word, used once "
                f"(e.g. 'acme.{EVENT}')"
            )
        template = job.replace(EVENT, SAMPLE_EVENT)
        if "{" in template or "}" in template:
            raise ValueError(f"job {job!r}: the only placeholder is {EVENT}")
        problem = limits.job_type_problem(template, allow_wildcards=False)
        if problem:
            raise ValueError(f"job {job!r} does not make a job type: {problem}")
        return job

    def job_type(self, event: str | None) -> str | None:
        """Return the job type ``event`` makes, or ``None`` when the event cannot make one."""
        if EVENT not in self.job:
            return self.job
        if not event:
            return None
        job_type = self.job.replace(EVENT, event)
        return None if limits.job_type_problem(job_type, allow_wildcards=False) else job_type


class WebhookSourceSpec(_SourceSpec):
    """One ``webhooks:`` entry: a sender, its secrets, and the job its events become."""

    scheme: WebhookScheme
    # Several secrets (newest first) let a sender rotate: any of them verifies.
    secret_env: NameList = ()
    secret_file: NameList = ()
    tolerance: Duration = 300_000  # how far a signed timestamp may be from now
    header: str | None = None
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    id_header: str | None = None
    event_header: str | None = None

    @field_validator("header", "timestamp_header", "id_header", "event_header")
    @classmethod
    def _header_names(cls, value: str | None) -> str | None:
        if value is not None and not names.HEADER_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.secret_env and not self.secret_file:
            raise ValueError(
                "name where the secret comes from: secret_env (an environment variable) or "
                "secret_file (a file), or a list of either for rotation"
            )
        if self.scheme is WebhookScheme.HMAC:
            if self.header is None:
                raise ValueError("the hmac scheme needs 'header': where the signature is sent")
            if EVENT in self.job and self.event_header is None:
                raise ValueError(
                    f"job uses {EVENT} but this hmac source has no event_header to take it from"
                )
        else:
            given = [key for key in HMAC_ONLY if getattr(self, key) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to scheme: hmac")
        return self


class StreamStart(StrEnum):
    """Where a stream source's consumer group starts when taskq creates it."""

    FIRST = "first"  # every entry the stream holds, and every later one
    NEW = "new"  # only entries added from then on


MAX_STREAM_READERS = 64
DEFAULT_STREAM_READERS_MAX = 4
# A reader submits thousands of entries a second: a backlog of this many is well under a
# second of one reader's work before another is worth its start.
DEFAULT_STREAM_BACKLOG = 1000


class StreamSourceSpec(_SourceSpec):
    """One ``streams:`` entry: a Redis stream read through a consumer group, and the job each entry becomes."""

    stream: Annotated[str, Field(min_length=1, max_length=512)]  # the stream's key
    group: Annotated[str, Field(min_length=1, max_length=255)] = "taskq"
    event_field: str | None = None  # the entry field whose value fills {event}
    # The entry field holding the payload as JSON; unset: the entry's fields as an object.
    payload_field: str | None = None
    tenant: limits.Tenant = names.DEFAULT_TENANT
    dead_letter: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    start: StreamStart = StreamStart.FIRST
    batch: Annotated[int, Field(ge=1, le=1000)] = 100
    # How long an entry read but never acknowledged (its reader died) waits before another
    # reader of the group claims it (XAUTOCLAIM).
    claim_after: Duration = 60_000
    # Readers ``taskctl up`` runs while the autoscaler is off, and the default ``scale.min``.
    consumers: Annotated[int, Field(ge=1, le=MAX_STREAM_READERS)] = 1
    # Readers the autoscaler keeps, on the group's backlog (entries not yet read, and read
    # but not acknowledged): ``backlog_per_worker`` is the backlog one reader carries.
    scale: ScaleSpec

    @model_validator(mode="before")
    @classmethod
    def _scale_defaults(cls, data: Any) -> Any:
        """Fill the keys of ``scale`` left out: min ``consumers``, max at least 4, 1000 entries a reader."""
        if not isinstance(data, dict):
            return data
        scale = data.get("scale") or {}
        if not isinstance(scale, dict):
            return data  # a ScaleSpec already, or a mistake its own validation reports
        low = scale.get("min", data.get("consumers", 1))
        high = max(DEFAULT_STREAM_READERS_MAX, low) if isinstance(low, int) else low
        defaults = {"min": low, "max": high, "backlog_per_worker": DEFAULT_STREAM_BACKLOG}
        return {**data, "scale": defaults | scale}

    @field_validator("scale")
    @classmethod
    def _readers(cls, value: ScaleSpec) -> ScaleSpec:
        if value.min < 1:
            raise ValueError(
                "scale.min is below 1; a stream source keeps one reader at least, which "
                "creates its consumer group and whose backlog the autoscaler reads"
            )
        if value.max > MAX_STREAM_READERS:
            raise ValueError(f"scale.max is above {MAX_STREAM_READERS} readers; lower it")
        return value

    @field_validator("claim_after")
    @classmethod
    def _a_second_at_least(cls, value: int) -> int:
        if value < 1000:
            raise ValueError(
                f"claim_after {format_duration(value)} is below 1s; a slow publish would have "
                "its entry claimed by another reader while it is still in hand"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if EVENT in self.job and self.event_field is None:
            raise ValueError(
                f"job uses {EVENT} but this stream source has no event_field to take it from"
            )
        if self.dead_letter_stream == self.stream:
            raise ValueError("dead_letter must be another stream than the one read")
        return self

    @property
    def dead_letter_stream(self) -> str:
        """Return the stream that receives the entries that cannot become jobs."""
        return self.dead_letter or f"{self.stream}.dead"


class TopologySpec(_Spec):
    """The whole validated topology file, with group defaults already applied."""

    version: Annotated[int, Field(ge=1, le=1)] = 1
    namespace: str = "taskq"
    delays: DelaySpec = DelaySpec()
    groups: dict[str, GroupSpec]
    webhooks: dict[str, WebhookSourceSpec] = Field(default_factory=dict)
    streams: dict[str, StreamSourceSpec] = Field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = Field(default_factory=dict)

    def __hash__(self) -> int:
        # Its mappings are unhashable and unordered: hashed as its canonical JSON.
        return hash(orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS))


BUILTIN_GROUP_DEFAULTS: dict[str, Any] = {
    "prefetch": 16,
    "concurrency": 8,
    "timeout": "30s",
    "retry": {"max_attempts": 8, "base": "1s", "factor": 2, "max": "15m", "jitter": "full"},
    "priority": {"strategy": "queue", "queue_type": "classic"},
    "dlq": {"retention": "14d", "max_length": 100_000},
    "scale": {"min": 1, "max": 4, "backlog_per_worker": 500},
    "retention": "7d",
}
"""What a group gets for every key that neither it nor ``defaults`` sets."""
