"""Masks secrets in log text and fields: URL passwords, secret-named keys' values, and payloads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SECRET_WORDS = (
    r"password|passwd|secret|token|authorization|signature|api[_-]?key|cookie|credential"
)
_SECRET_KEY = re.compile(_SECRET_WORDS, re.IGNORECASE)
# Payloads and bodies are the customer's data: a field named so is never written out.
_DATA_KEY = re.compile(r"^(?:payload|body|request_body)$", re.IGNORECASE)
# scheme://user:password@host; greedy up to the last '@' before the path, as urlsplit reads it.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*):[^/\s]*@", re.IGNORECASE)
# key=value, key: value, "key": "value" (and "Authorization: Bearer x") where key names a secret.
_KEY_VALUE = re.compile(
    rf"""([\w-]*(?:{_SECRET_WORDS})[\w-]*["']?\s*[:=]\s*["']?)"""
    r"""(?:(?:bearer|basic)\s+)?[^\s"',;&}\]]+""",
    re.IGNORECASE,
)

# Pydantic's errors quote the input they rejected: a payload's value, so it is cut out too.
_PYDANTIC_INPUT = re.compile(r"(input_value=).*?(?=, input_type=)")


def redact_text(text: str) -> str:
    """Return ``text`` with URL passwords, secret-named keys' values and rejected inputs masked."""
    text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    text = _PYDANTIC_INPUT.sub(rf"\g<1>{MASK}", text)
    return _KEY_VALUE.sub(rf"\g<1>{MASK}", text)


def hidden_key(key: str) -> bool:
    """Return whether a field named ``key`` holds a secret or a payload, never to be logged."""
    return bool(_SECRET_KEY.search(key) or _DATA_KEY.match(key))


def redact_value(value: Any) -> Any:
    """Return ``value`` with its strings redacted and its secret-named entries masked, recursively."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_fields(value)
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


def redact_fields(fields: Mapping[Any, Any]) -> dict[Any, Any]:
    """Return ``fields`` with secret and payload values masked and every string redacted."""
    return {
        key: MASK if hidden_key(str(key)) else redact_value(value) for key, value in fields.items()
    }
