"""What every signature scheme returns, and the bounded header parsing the schemes share."""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from topology.errors import (
    MalformedWebhook,
    SignatureRejected,
    TimestampRejected,
    WebhookConfigError,
)

# Rotation needs two or three signatures; a longer list only costs us CPU, so it is refused.
MAX_SIGNATURES = 10
# Ten ed25519 signatures fit in about 1 KB; anything longer is refused before it is split.
MAX_HEADER_CHARS = 4096
DEFAULT_TOLERANCE = 300

# A delivery id becomes a job's idempotency key (1-255 printable ASCII characters, no
# spaces): 200 leaves room for the source name the receiver puts in front of it.
_TOKEN = re.compile(r"[\x21-\x7e]{1,200}")
# int() would also take "+1", " 1", "1_0" and non-ASCII digits, which no sender signs.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified delivery: the sender's id, its event name and its signed timestamp."""

    delivery_id: str
    event: str | None
    timestamp: int | None


class Verifier:
    """Checks one inbound delivery's signature and says what it carries; each scheme fills in ``_verify``."""

    name = "webhook"  # how a decoding error names the delivery
    # The headers a delivery's job keeps (lower case), so a handler can verify it again.
    kept: tuple[str, ...] = ()

    def __init__(self, secrets: Sequence[bytes], tolerance: int = DEFAULT_TOLERANCE) -> None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance <= 0:
            raise WebhookConfigError(
                f"the tolerance must be a positive number of seconds, not {tolerance!r}"
            )
        self._secrets = tuple(secrets)
        self._tolerance = tolerance

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Delivery:
        """Return the delivery if ``body`` is authentically signed, else raise a WebhookError."""
        with foreign_errors(self.name):
            return self._verify(body, headers, now)

    def _verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Delivery:
        raise NotImplementedError


@contextmanager
def foreign_errors(scheme: str) -> Iterator[None]:
    """Turn a decoding error that slipped past the explicit checks into MalformedWebhook."""
    try:
        yield
    except ValueError as exc:  # binascii.Error, UnicodeError and JSONDecodeError are ValueErrors
        raise MalformedWebhook(f"the {scheme} delivery cannot be decoded") from exc


def header(headers: Mapping[str, str], name: str, *, signature: bool = False) -> str:
    """Return the header's value; a missing one refuses the delivery (as unsigned, for ``signature``)."""
    value = headers.get(name)
    if not value:
        if signature:
            raise SignatureRejected(f"the {name} header is missing: the delivery is not signed")
        raise MalformedWebhook(f"the {name} header is missing")
    if len(value) > MAX_HEADER_CHARS:
        raise MalformedWebhook(
            f"the {name} header is {len(value)} characters long; the limit is {MAX_HEADER_CHARS}"
        )
    if not value.isascii():
        raise MalformedWebhook(f"the {name} header holds non-ASCII characters")
    return value


def printable_token(value: str, source: str) -> str:
    """Return ``value`` if it can serve as an id or event name (1-200 printable ASCII, no spaces)."""
    if not _TOKEN.fullmatch(value):
        raise MalformedWebhook(f"{source} must be 1-200 printable ASCII characters without spaces")
    return value


def unix_seconds(value: str, source: str) -> int:
    """Return the whole unix seconds written in ``value``."""
    if not _UNIX_SECONDS.fullmatch(value):
        raise MalformedWebhook(f"{source} is not a whole number of unix seconds")
    return int(value)


def check_window(timestamp: int, now: float, tolerance: int, *, future_ok: bool) -> None:
    """Refuse a timestamp more than ``tolerance`` seconds old (or ahead, unless ``future_ok``)."""
    age = now - timestamp
    if age > tolerance:
        raise TimestampRejected(f"signed {age:.0f} s ago, past the {tolerance} s tolerance")
    if -age > tolerance and not future_ok:
        raise TimestampRejected(
            f"signed {-age:.0f} s in the future, past the {tolerance} s tolerance"
        )


def check_signature_count(count: int, source: str) -> None:
    """Refuse a signature list longer than MAX_SIGNATURES before any of it is decoded."""
    if count > MAX_SIGNATURES:
        raise MalformedWebhook(
            f"{source} holds {count} signatures; at most {MAX_SIGNATURES} are considered"
        )


def decode_signature(value: str, encoding: str, source: str) -> bytes:
    """Return the bytes of a ``hex`` or ``base64`` (standard alphabet, padded) signature."""
    if encoding == "hex":
        if not _HEX.fullmatch(value):
            raise MalformedWebhook(f"{source} is not a hexadecimal signature")
        return bytes.fromhex(value)
    if not value or not _BASE64.fullmatch(value):
        raise MalformedWebhook(f"{source} is not a base64 signature")
    return base64.b64decode(value, validate=True)


def hmac_matches(
    secrets: Sequence[bytes], content: bytes, given: Sequence[bytes], algorithm: str = "sha256"
) -> bool:
    """Return whether a ``given`` signature is the HMAC of ``content`` under a secret (constant time)."""
    expected = [hmac.digest(secret, content, algorithm) for secret in secrets]
    return any(hmac.compare_digest(e, g) for e in expected for g in given)


def json_object(body: bytes) -> dict[str, Any] | None:
    """Return the body as a JSON object, or ``None`` when it is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
