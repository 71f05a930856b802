"""Broker settings read from ``TASKQ_*`` environment variables, with secrets masked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from topology.errors import SettingsError

ENV_PREFIX = "TASKQ_"
S = TypeVar("S", bound=BaseModel)


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class BrokerSettings(BaseModel):
    """Where RabbitMQ and its management API are, and how to stay connected to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/")
    management_url: SecretStr | None = None
    heartbeat: Annotated[int, Field(ge=0, le=600)] = 30
    connect_timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    management_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("amqp", "amqps"):
            raise ValueError(f"must start with amqp:// or amqps://, not {scheme or 'nothing'}://")
        return value

    @field_validator("management_url")
    @classmethod
    def _http_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def vhost(self) -> str:
        """Return the virtual host named by the AMQP URL's path (``/`` when empty)."""
        path = urlsplit(self.amqp_url.get_secret_value()).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @property
    def management_base(self) -> str:
        """Return the management API base URL, derived from the AMQP URL when not set."""
        if self.management_url is not None:
            return self.management_url.get_secret_value().rstrip("/")
        parts = urlsplit(self.amqp_url.get_secret_value())
        scheme = "https" if parts.scheme == "amqps" else "http"
        port = 15671 if scheme == "https" else 15672
        return f"{scheme}://{parts.hostname or 'localhost'}:{port}"

    @property
    def management_credentials(self) -> tuple[str, str]:
        """Return the management API user and password (from its URL, else the AMQP URL)."""
        for secret in (self.management_url, self.amqp_url):
            if secret is not None:
                parts = urlsplit(secret.get_secret_value())
                if parts.username is not None:
                    return unquote(parts.username), unquote(parts.password or "")
        return "guest", "guest"

    def with_vhost(self, vhost: str) -> BrokerSettings:
        """Return these settings pointed at another virtual host."""
        parts = urlsplit(self.amqp_url.get_secret_value())
        url = urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
        return self.model_copy(update={"amqp_url": SecretStr(url)})

    def describe(self) -> str:
        """Return a one-line, password-free description for logs and the CLI."""
        return f"{mask_url(self.amqp_url.get_secret_value())} (management {self.management_base})"


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None, **overrides: Any) -> S:
    """Build settings ``cls`` from ``environ`` (default: the process environment).

    Raises:
        SettingsError: naming each bad ``TASKQ_*`` variable and what it must be.
    """
    env = os.environ if environ is None else environ
    values = {
        name: env[ENV_PREFIX + name.upper()]
        for name in cls.model_fields
        if env.get(ENV_PREFIX + name.upper(), "").strip()
    }
    try:
        return cls.model_validate({**values, **overrides})
    except ValidationError as exc:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(_problems(cls, exc))) from exc


def _problems(cls: type[BaseModel], exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        secret = cls.model_fields.get(field) is not None and "Secret" in str(
            cls.model_fields[field].annotation
        )
        got = "" if secret or error["type"] == "value_error" else f" (got {error['input']!r})"
        out.append(
            f"{ENV_PREFIX}{field.upper()}: {error['msg'].removeprefix('Value error, ')}{got}"
        )
    return out
