"""Every ``TASKQ_*`` setting, declared once: field ``name`` is variable ``TASKQ_NAME``, ``SecretStr`` masked."""

import ast
import os
from collections.abc import Callable, Iterator, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, cast
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from telemetry.redaction import mask_url
from topology.errors import SettingsError
from topology.limits import MAX_DELAY_S, Tenant, checked, tenant_problem
from topology.names import DEFAULT_TENANT
from topology.sealing import Sealer, parse_keys, sealer_from

ENV_PREFIX = "TASKQ_"
# Asymmetric algorithms only: a key that verifies is never also a key that signs, so an
# HS256 token "signed" with a public key can never pass (RFC 8725 section 2.1).
SIGNATURE_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _names(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def _cased(case: Callable[[str], str]) -> Callable[[Any], Any]:
    return lambda value: case(value.strip()) if isinstance(value, str) else value


def _scheme(*allowed: str) -> AfterValidator:
    def check(value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in allowed:
            wanted = " or ".join(f"{a}://" for a in allowed)
            raise ValueError(f"must start with {wanted}, not {scheme or 'nothing'}://")
        return value

    return AfterValidator(check)


class Section(BaseModel):
    """One section of the settings; each field's docstring is its one-line description."""

    # Built on first use: a short command reads one or two sections of the sixteen. (This module
    # also leaves annotations to Python: pydantic evaluating strings would cost every command.)
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class LocationSettings(Section):
    """Where the topology file, the job store, the blob store and local files are."""

    topology: str = ""
    """The topology file (empty: the packaged ``topology/default.yaml``)."""
    store_url: str = "sqlite:///.taskq/jobs.sqlite3"
    """The job store: a SQLite file (``sqlite:///path``) or a ``postgresql://`` DSN (TLS: its ``sslmode`` and ``ssl*`` files)."""
    blob_url: str = "file:.taskq/blobs"
    """The claim-check blob store: a ``file:`` directory, ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``azblob://account/container/prefix``."""
    s3_endpoint_url: str = ""
    """An S3-compatible endpoint (empty: AWS; credentials from the usual ``AWS_*`` variables)."""
    s3_region: str = "us-east-1"
    """The S3 region."""
    blob_endpoint_url: str = ""
    """The endpoint of a ``gs://`` or ``azblob://`` blob store, e.g. an emulator (empty: the cloud's; credentials: the workload identity)."""
    azure_storage_key: SecretStr | None = None
    """The storage account key of an ``azblob://`` store (unset: Entra ID, e.g. AKS workload identity)."""
    data_dir: str = ".taskq"
    """Where ``taskctl up`` writes the admin key (``admin.key``, mode 0600)."""


class LogSettings(Section):
    """How a process logs."""

    log_format: Annotated[Literal["json", "text", "auto"], BeforeValidator(_cased(str.lower))] = (
        "auto"
    )
    """``json`` lines, ``text``, or ``auto``: text on a terminal, else JSON."""
    log_level: Annotated[
        Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"],
        BeforeValidator(_cased(str.upper)),
    ] = "INFO"
    """The lowest level logged (the short ``taskctl`` commands log WARNING unless set)."""


def _host_ports(text: str, default_port: int) -> list[tuple[str, int]]:
    """Return the ``host[:port]`` entries of comma-separated ``text`` (ValueError names a bad one)."""
    nodes = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        host, colon, port = entry.rpartition(":")
        if not colon:
            host, port = entry, ""
        if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ValueError(f"each entry is host or host:port, got {entry!r}")
        nodes.append((host.strip("[]"), int(port) if port else default_port))
    return nodes


class BrokerSettings(Section):
    """Where RabbitMQ and its management API are, and how to stay connected to them."""

    amqp_url: Annotated[SecretStr, _scheme("amqp", "amqps")] = SecretStr(
        "amqp://guest:guest@localhost:5672/"
    )
    """The broker's AMQP URL; its path is the virtual host."""
    amqp_failover: str = ""
    """More nodes of the broker's cluster as ``host:port,host:port``, tried in turn when one does not answer."""
    management_url: Annotated[SecretStr, _scheme("http", "https")] | None = None
    """The management API (default: the AMQP host on port 15672, with its credentials)."""
    management_failover: str = ""
    """More nodes' management API base URLs (``http://host:port``, comma-separated), tried in turn when one does not answer."""
    heartbeat: Annotated[int, Field(ge=0, le=600)] = 30
    """AMQP heartbeat, seconds."""
    connect_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds to open a connection."""
    reconnect_interval: Annotated[float, Field(gt=0, le=300)] = 1.0
    """Seconds between tries to reopen a lost connection (workers and publishers resume on their own)."""
    management_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    """Seconds per management API request."""
    broker_tls_ca_file: str = ""
    """CA bundle (PEM) that verifies the broker's and management API's certificates (empty: the system's)."""
    broker_tls_cert_file: str = ""
    """Client certificate (PEM) shown to the broker and management API over TLS (mutual TLS)."""
    broker_tls_key_file: str = ""
    """The private key (PEM) of ``TASKQ_BROKER_TLS_CERT_FILE`` (empty: in the certificate file)."""
    broker_sasl_external: bool = False
    """Log in to the broker as the client certificate's name (SASL EXTERNAL), not the URL's user."""

    @field_validator("amqp_failover")
    @classmethod
    def _failover_nodes(cls, value: str) -> str:
        _host_ports(value, 5672)
        return value

    @field_validator("management_failover")
    @classmethod
    def _failover_bases(cls, value: str) -> str:
        for base in filter(None, (b.strip() for b in value.split(","))):
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
                raise ValueError(
                    f"{base!r} is not a management API base URL like http://host:15672 "
                    "(no credentials: they come from TASKQ_MANAGEMENT_URL or TASKQ_AMQP_URL)"
                )
        return value

    @model_validator(mode="after")
    def _tls_complete(self) -> Self:
        if self.broker_tls_key_file and not self.broker_tls_cert_file:
            raise ValueError("TASKQ_BROKER_TLS_KEY_FILE needs TASKQ_BROKER_TLS_CERT_FILE")
        if self.broker_sasl_external and not (self.amqps and self.broker_tls_cert_file):
            raise ValueError(
                "TASKQ_BROKER_SASL_EXTERNAL needs an amqps:// TASKQ_AMQP_URL and a client "
                "certificate (TASKQ_BROKER_TLS_CERT_FILE)"
            )
        tls = self.amqps or self.management_base.startswith("https://")
        if (self.broker_tls_ca_file or self.broker_tls_cert_file) and not tls:
            # Files that would be silently ignored: the operator meant TLS and would not get it.
            raise ValueError(
                "TASKQ_BROKER_TLS_* files are set but the broker is reached over plain "
                "amqp:// and http://; use an amqps:// TASKQ_AMQP_URL"
            )
        return self

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Return the broker nodes to connect to, the AMQP URL's first, then the failover ones."""
        parts = urlsplit(self.amqp_url.get_secret_value())
        default_port = 5671 if parts.scheme == "amqps" else 5672
        first = (parts.hostname or "localhost", parts.port or default_port)
        return [first, *_host_ports(self.amqp_failover, default_port)]

    @property
    def amqps(self) -> bool:
        """Return whether the AMQP connection is TLS (an ``amqps://`` URL)."""
        return urlsplit(self.amqp_url.get_secret_value()).scheme == "amqps"

    @property
    def vhost(self) -> str:
        """Return the virtual host named by the AMQP URL's path (``/`` when empty)."""
        path = urlsplit(self.amqp_url.get_secret_value()).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @property
    def management_base(self) -> str:
        """Return the management API base URL without credentials, derived from the AMQP URL when not set."""
        if self.management_url is not None:
            # The credentials go in a header (management_credentials), never into URLs or logs.
            parts = urlsplit(self.management_url.get_secret_value())
            netloc = parts.netloc.rpartition("@")[2]
            return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
        parts = urlsplit(self.amqp_url.get_secret_value())
        scheme = "https" if parts.scheme == "amqps" else "http"
        port = 15671 if scheme == "https" else 15672
        return f"{scheme}://{parts.hostname or 'localhost'}:{port}"

    @property
    def management_bases(self) -> list[str]:
        """Return the management API base URLs to try in turn: ``management_base``, then the failover ones."""
        more = [base.strip().rstrip("/") for base in self.management_failover.split(",")]
        return [self.management_base, *(base for base in more if base)]

    @property
    def management_credentials(self) -> tuple[str, str]:
        """Return the management API user and password (from its URL, else the AMQP URL)."""
        for secret in (self.management_url, self.amqp_url):
            if secret is not None:
                parts = urlsplit(secret.get_secret_value())
                if parts.username is not None:
                    return unquote(parts.username), unquote(parts.password or "")
        return "guest", "guest"

    def with_vhost(self, vhost: str) -> Self:
        """Return these settings pointed at another virtual host."""
        parts = urlsplit(self.amqp_url.get_secret_value())
        url = urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
        return self.model_copy(update={"amqp_url": SecretStr(url)})

    def describe(self) -> str:
        """Return a one-line, password-free description for logs and the CLI."""
        return f"{mask_url(self.amqp_url.get_secret_value())} (management {self.management_base})"


class PublisherSettings(Section):
    """How long to wait for a confirm, and how many publishes to keep in flight."""

    confirm_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    """Seconds to wait for a publisher confirm."""
    publish_window: Annotated[int, Field(ge=1, le=65535)] = 512
    """Publishes in flight at once in ``publish_many``."""


class SubmitSettings(Section):
    """Limits and lifetimes of job submission (HTTP API and Python clients alike)."""

    claim_check_bytes: Annotated[int, Field(ge=0)] = 256 * 1024
    """Payloads above this many bytes go to the blob store (0: never)."""
    max_delay: Annotated[float, Field(gt=0, le=MAX_DELAY_S)] = 30 * 86400.0
    """The longest ``delay``/``run_at`` accepted, seconds."""
    idempotency_ttl: Annotated[float, Field(gt=0)] = 86400.0
    """Seconds a finished request is replayed for its idempotency key."""
    idempotency_lease: Annotated[float, Field(gt=0)] = 60.0
    """Seconds an unfinished request holds its idempotency key."""
    batch_max: Annotated[int, Field(ge=1, le=10000)] = 500
    """Jobs per ``POST /jobs/batch``."""
    repair_after: Annotated[float, Field(gt=0)] = 30.0
    """Seconds after which a job stored but never confirmed is published again (under the lease)."""
    submit_events: bool = False
    """Also publish a status event when a job is accepted."""


class RetentionSettings(Section):
    """How often the API removes what is kept no longer (how long is per group, in the topology)."""

    retention_sweep_interval: Annotated[float, Field(ge=0, le=86400)] = 60.0
    """Seconds between the API's retention sweeps of finished jobs and orphaned blobs (0: off)."""
    orphan_blob_grace: Annotated[float, Field(gt=0)] = 86400.0
    """Seconds a blob no job has is kept before a sweep deletes it (a submission writes its blob first)."""


class ApiSettings(Section):
    """Where the HTTP API listens and what it accepts."""

    host: str = "127.0.0.1"
    """The address the HTTP API listens on."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    """The port the HTTP API listens on."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    """The largest request body (413 above), refused before it is buffered."""
    max_batch_body_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    """The largest ``POST /jobs/batch`` body."""
    retry_after: Annotated[int, Field(ge=1, le=3600)] = 5
    """The ``Retry-After`` seconds of a 503."""
    ws_origins: str = ""
    """Browser origins (comma-separated) that may open WebSockets besides the API's own."""
    ws_max_frame_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 64 * 1024
    """The largest frame a WebSocket client may send."""
    ws_idle_timeout: Annotated[float, Field(gt=0, le=86400)] = 300.0
    """Seconds a quiet WebSocket, or a gRPC `Watch` stream with no event, stays open."""
    api_tls_cert_file: str = ""
    """Serve HTTPS with this certificate chain (PEM; empty: plain HTTP, for loopback only)."""
    api_tls_key_file: str = ""
    """The private key (PEM) of ``TASKQ_API_TLS_CERT_FILE`` (empty: in the certificate file)."""
    api_tls_client_ca_file: str = ""
    """Require every caller to show a client certificate this CA bundle (PEM) signed: mutual TLS."""

    @model_validator(mode="after")
    def _tls_complete(self) -> Self:
        if (self.api_tls_key_file or self.api_tls_client_ca_file) and not self.api_tls_cert_file:
            raise ValueError(
                "TASKQ_API_TLS_KEY_FILE and TASKQ_API_TLS_CLIENT_CA_FILE need "
                "TASKQ_API_TLS_CERT_FILE (the API's own certificate)"
            )
        return self

    @property
    def allowed_origins(self) -> frozenset[str]:
        """Return the origins (``https://console.example.com``) listed in ``ws_origins``."""
        return frozenset(origin.rstrip("/") for origin in _names(self.ws_origins))


class GrpcSettings(Section):
    """Where the gRPC job API listens; the API's TLS files secure it too."""

    grpc: bool = False
    """Serve the gRPC job API beside the HTTP API (``taskctl serve --grpc`` serves it alone)."""
    grpc_host: str = "127.0.0.1"
    """The address the gRPC job API listens on."""
    grpc_port: Annotated[int, Field(ge=1, le=65535)] = 50051
    """The port the gRPC job API listens on."""


class AuthSettings(Section):
    """API keys, bearer tokens (JWT) and the rate limits every credential gets."""

    api_key_cache_ttl: Annotated[float, Field(ge=0, le=60)] = 5.0
    """Seconds a verified API key is remembered per process: how long a revoked key still passes."""
    api_key_pepper: SecretStr | None = None
    """The key of the API-key hash; changing it voids every key."""
    jwks_url: str | None = None
    """The identity provider's JWKS URL (turns bearer tokens on)."""
    jwt_keys_file: str | None = None
    """A JWKS document or one PEM public key (turns bearer tokens on instead of a URL)."""
    jwt_issuer: str | None = None
    """The required ``iss`` of bearer tokens."""
    jwt_audience: str | None = None
    """The required ``aud`` of bearer tokens."""
    jwt_algorithms: str = "RS256,ES256"
    """Allowed signature algorithms, comma-separated (asymmetric only)."""
    jwt_types: str = "at+jwt,application/at+jwt"
    """Accepted ``typ`` headers (RFC 9068; add JWT for providers that do not type tokens)."""
    jwt_leeway: Annotated[float, Field(ge=0, le=300)] = 30.0
    """Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    jwt_tenant_claim: str = "tenant"
    """The claim holding a token's tenant."""
    jwt_default_tenant: Annotated[str, checked(lambda v: v and tenant_problem(v))] = DEFAULT_TENANT
    """The tenant of tokens without the claim (empty: refuse them)."""
    jwt_scope_claim: str = "scope"
    """The claim holding a token's scopes."""
    jwt_job_types_claim: str = "job_types"
    """The claim holding the job-type patterns a token may submit."""
    jwks_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    """Seconds a JWKS fetch may take."""
    jwks_cache_ttl: Annotated[float, Field(ge=1, le=86400)] = 300.0
    """Seconds a fetched key set is kept."""
    jwks_min_refresh: Annotated[float, Field(ge=0, le=3600)] = 30.0
    """The least seconds between two JWKS fetches."""
    rate_limit: Annotated[float, Field(ge=0)] = 1000.0
    """Requests per second per credential (0: unlimited)."""
    rate_burst: Annotated[int, Field(ge=1)] = 2000
    """Requests at once per credential."""
    webhook_rate_limit: Annotated[float, Field(ge=0)] = 200.0
    """Deliveries per second per webhook source (0: unlimited)."""
    webhook_rate_burst: Annotated[int, Field(ge=1)] = 400
    """Deliveries at once per webhook source."""

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric(cls, value: str) -> str:
        chosen = _names(value)
        if not chosen:
            raise ValueError("name at least one algorithm, e.g. RS256,ES256")
        refused = [a for a in chosen if a not in SIGNATURE_ALGORITHMS]
        if refused:
            allowed = ", ".join(sorted(SIGNATURE_ALGORITHMS))
            raise ValueError(
                f"{', '.join(refused)} not allowed (never none or HMAC); choose from {allowed}"
            )
        return value

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.jwks_url and self.jwt_keys_file:
            raise ValueError("set TASKQ_JWKS_URL or TASKQ_JWT_KEYS_FILE, not both")
        if self.jwt_enabled and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("bearer tokens need TASKQ_JWT_ISSUER and TASKQ_JWT_AUDIENCE")
        if self.jwks_url and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("TASKQ_JWKS_URL must be an https:// URL")
        return self

    @property
    def jwt_enabled(self) -> bool:
        """Return whether bearer tokens (JWT) are accepted besides API keys."""
        return bool(self.jwks_url or self.jwt_keys_file)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """Return the allowed JWT signature algorithms."""
        return _names(self.jwt_algorithms)

    @property
    def token_types(self) -> tuple[str, ...]:
        """Return the accepted JWT ``typ`` headers, lower-cased."""
        return tuple(t.lower() for t in _names(self.jwt_types))


class ClientSettings(Section):
    """Who the Python clients and ``taskctl`` act as."""

    tenant: Tenant = DEFAULT_TENANT
    """The tenant whose jobs the Python clients and the ``taskctl`` job commands submit and see."""
    api_key: SecretStr | None = None
    """The API key ``taskctl`` sends to HTTP APIs (default: the admin key file's)."""


class WorkerSettings(Section):
    """What a worker runs, how it drains, and when a job counts as poison."""

    handlers: str = "consumers.examples"
    """Comma-separated modules whose ``@handler``s the workers run (callbacks are built in)."""
    grace: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """Seconds a worker lets jobs in flight finish after SIGTERM."""
    poison_deliveries: Annotated[int, Field(ge=1, le=1000)] = 5
    """Deliveries beyond its attempts after which a job is dead-lettered as poison (quorum lanes: ``x-delivery-limit`` 2 x this + 10)."""
    breaker_threshold: Annotated[int, Field(ge=1, le=10000)] = 5
    """Consecutive failures that open a dependency's circuit breaker."""
    breaker_cooldown: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """Seconds an open breaker waits before one probe job goes through."""
    running_event_delay: Annotated[float, Field(ge=0, le=60)] = 0.1
    """Seconds a run must last before its ``running`` event is published (a hot-path cost)."""
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """Serve this worker's ``/metrics`` on this port (0: not; under ``taskctl up`` the API serves them)."""


class SchedulerSettings(Section):
    """How scheduler replicas agree on the one that fires, and where one serves its metrics."""

    scheduler_lease: Annotated[float, Field(ge=0.3, le=300)] = 5.0
    """Seconds a scheduler leads after its last leadership tick (each replica ticks three times a lease)."""
    scheduler_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """Serve this scheduler's ``/metrics`` on this port (0: not; under ``taskctl up`` the API serves them)."""


class AutoscalerSettings(Section):
    """How often the autoscaler polls, and where it serves its status and metrics."""

    autoscale: bool = True
    """``taskctl up`` scales workers (false: each group runs its min, at least 1)."""
    autoscale_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """Seconds between the autoscaler's readings."""
    autoscaler_host: str = "127.0.0.1"
    """Where the autoscaler serves ``/status`` and ``/metrics``."""
    autoscaler_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    """The port of the autoscaler's ``/status`` and ``/metrics``."""


class CallbackSettings(Section):
    """How job callbacks are signed and where they may go."""

    callback_signing_key: SecretStr | None = None
    """The key each endpoint's callback secret derives from (unset: callbacks dead-letter)."""
    callback_allow: str = ""
    """Hosts or CIDRs callbacks may reach despite the SSRF rules (``127.0.0.1,10.0.0.0/8``)."""
    callback_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds a callback POST may take."""
    callback_dns_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    """Seconds a callback URL's DNS lookup may take, at submission and before each delivery."""
    callback_breaker_threshold: Annotated[int, Field(ge=1, le=10000)] = 5
    """Failures in a row after which an endpoint's breaker stops calls to it."""
    callback_breaker_cooldown: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Seconds an endpoint's open breaker waits before one probe call."""


class EncryptionSettings(Section):
    """The data keys that seal job payloads and results at rest (none: they are stored clear)."""

    data_keys: SecretStr | None = None
    """Data keys as ``id:base64key,...`` (32-byte AES-256 keys); the first seals, every one opens."""
    data_keys_file: str | None = None
    """A file of ``id:base64key`` lines, read instead of ``TASKQ_DATA_KEYS``; the first line seals."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.data_keys is not None and self.data_keys_file:
            raise ValueError("set TASKQ_DATA_KEYS or TASKQ_DATA_KEYS_FILE, not both")
        if self.data_keys is not None:
            parse_keys(self.data_keys.get_secret_value(), "TASKQ_DATA_KEYS")
        return self

    def sealer(self) -> Sealer:
        """Return the sealer these keys make (SettingsError if the key file is unusable)."""
        keys = None if self.data_keys is None else self.data_keys.get_secret_value()
        return sealer_from(keys, self.data_keys_file)


class StreamSettings(Section):
    """Where the Redis of the topology's stream sources is, how the sources read, and where a reader serves its metrics."""

    redis_url: Annotated[SecretStr, _scheme("redis", "rediss", "unix")] = SecretStr(
        "redis://127.0.0.1:6379/0"
    )
    """The Redis server of the topology's ``streams`` (``rediss://`` for TLS; a password goes in the URL)."""
    stream_block: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Seconds a stream source's read waits for new entries."""
    stream_retry_interval: Annotated[float, Field(gt=0, le=300)] = 1.0
    """Seconds before a stream source tries again the entries whose jobs could not be submitted (the broker or a store down)."""
    stream_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    """Serve this stream reader's ``/metrics`` on this port (0: not; under ``taskctl up`` the API serves them)."""


class Settings(BaseModel):
    """Every setting of a taskq process, by section."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    locations: LocationSettings
    log: LogSettings
    broker: BrokerSettings
    publisher: PublisherSettings
    submit: SubmitSettings
    retention: RetentionSettings
    api: ApiSettings
    grpc: GrpcSettings
    auth: AuthSettings
    client: ClientSettings
    worker: WorkerSettings
    scheduler: SchedulerSettings
    autoscaler: AutoscalerSettings
    callbacks: CallbackSettings
    encryption: EncryptionSettings
    streams: StreamSettings


S = TypeVar("S", bound=Section)


def declared() -> Iterator[tuple[str, str, FieldInfo, str]]:
    """Yield each setting's section, variable name, declaration and description, in the order of the docs."""
    # The descriptions are the fields' docstrings, read from this module's source only for the
    # reference table and ``taskctl config``: pydantic's own docstring reading would cost every
    # process that loads its settings.
    described = {}
    for node in ast.parse(Path(__file__).read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef):
            for field, doc in pairwise(node.body):
                if isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr):
                    described[node.name, ast.unparse(field.target)] = ast.literal_eval(doc.value)
    for section, kind in _sections():
        for name, info in kind.model_fields.items():
            yield section, ENV_PREFIX + name.upper(), info, described[kind.__name__, name]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from ``environ`` (default: the process's; blank is unset), or raise SettingsError."""
    sections: dict[str, Any] = {}
    problems: list[str] = []
    for section, kind in _sections():
        try:
            sections[section] = read_section(kind, environ)
        except SettingsError as exc:  # a section's own check may name its variable in one line
            problems += exc.problems or (str(exc),)
    if problems:
        raise _invalid(problems)
    return Settings.model_construct(**sections)


def read_section(kind: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Read one section of the settings as ``load_settings`` does, building only that section."""
    env = os.environ if environ is None else environ
    values = {
        name: env[variable]
        for name in kind.model_fields
        if env.get(variable := ENV_PREFIX + name.upper(), "").strip()
    }
    if not values:
        # Pydantic validates no default, so this is what validating nothing gives, without
        # building a validator: a short command starts that much sooner.
        return cast("S", kind.model_construct())
    try:
        return kind.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:  # else a rule across fields, which names its variables itself
                field = str(error["loc"][0])
                hide = is_secret(kind.model_fields[field]) or error["type"] == "value_error"
                got = "" if hide else f" (got {error['input']!r})"
                message = f"{ENV_PREFIX}{field.upper()}: {message}{got}"
            problems.append(message)
        raise _invalid(problems) from exc


def _invalid(problems: list[str]) -> SettingsError:
    return SettingsError("invalid settings:\n  " + "\n  ".join(problems), problems=tuple(problems))


def _sections() -> Iterator[tuple[str, type[Section]]]:
    for name, field in Settings.model_fields.items():
        yield name, cast("type[Section]", field.annotation)


def is_secret(field: FieldInfo) -> bool:
    """Return whether a declared setting is a secret (masked wherever it is shown)."""
    return "SecretStr" in str(field.annotation)
