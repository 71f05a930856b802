"""Masks secrets in log text and fields: URL passwords, secret-named keys' values, and payloads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
# Factored by first letter, so most positions are refused after one comparison.
_SECRET_WORDS = (
    r"passw(?:or)?d|s(?:ecret|ignature)|token|a(?:uthorization|pi[_-]?key)|c(?:ookie|redential)"
)
# Secret-named fields, and payloads and bodies (the customer's data), are never written out.
_HIDDEN_KEY = re.compile(rf"{_SECRET_WORDS}|^(?:payload|body|request_body)$", re.IGNORECASE)

# key=value, key: value, "key": "value" (and "Authorization: Bearer x") where key is a run of
# word characters and '-' holding a secret word. Attempts start only where such a run starts,
# and the atomic group takes the whole run once, so no run is scanned twice.
_KEY_VALUE = re.compile(
    rf"""(?<![\w-])((?>[\w-]*?(?:{_SECRET_WORDS})[\w-]*+)["']?+\s*+[:=]\s*+["']?+)"""
    r"""(?:(?:bearer|basic)\s++)?[^\s"',;&}\]]+""",
    re.IGNORECASE,
)

# scheme://user:password@host, the password taken up to the last '@' before the path, as
# urlsplit reads it. Found from each "://" that credentials follow: its scheme is then read
# backwards (on the reversed text), so no stretch of text is scanned twice.
_CREDENTIALS = re.compile(r"://[^:/@\s]*+(:)[^/\s]*@")
_SCHEME_RUN = re.compile(r"[a-z0-9+.-]*", re.IGNORECASE)
_SCHEME_START = re.compile(r"\b[a-z]", re.IGNORECASE)

# Pydantic's errors quote the input they rejected: a payload's value, so it is cut out too.
_INPUT, _INPUT_END = "input_value=", ", input_type="


def redact_text(text: str) -> str:
    """Return ``text`` with URL passwords, secret-named keys' values and rejected inputs masked."""
    text = mask_url(text)
    text = _mask_inputs(text)
    return _KEY_VALUE.sub(rf"\g<1>{MASK}", text)


def mask_url(text: str) -> str:
    """Return ``text`` (a URL, or text holding URLs) with the password of every ``scheme://user:password@`` masked."""
    if "://" not in text:
        return text
    backwards, size = text[::-1], len(text)
    done, out = 0, list[str]()
    for found in _CREDENTIALS.finditer(text):
        separator = found.start()
        scheme = _SCHEME_RUN.match(backwards, size - separator)  # always matches, maybe empty
        run = 0 if scheme is None else len(scheme.group())
        if _SCHEME_START.search(text, max(separator - run, done), separator) is not None:
            out += (text[done : found.start(1)], f":{MASK}@")
            done = found.end()
    return "".join((*out, text[done:])) if out else text


def _mask_inputs(text: str) -> str:
    """Return ``text`` with what follows each ``input_value=`` masked, up to ``, input_type=``."""
    start = text.find(_INPUT)
    done, out = 0, list[str]()
    while start >= 0:
        value = start + len(_INPUT)
        line_end = text.find("\n", value)
        line_end = len(text) if line_end < 0 else line_end
        end = text.find(_INPUT_END, value, line_end)
        if end < 0:
            # No end on this line: no later input_value= on it can have one either.
            start = text.find(_INPUT, line_end)
            continue
        out += (text[done:value], MASK)
        done = end
        start = text.find(_INPUT, end)
    return "".join((*out, text[done:])) if out else text


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
        key: MASK if _HIDDEN_KEY.search(str(key)) else redact_value(value)
        for key, value in fields.items()
    }
