"""Human durations such as ``1s``, ``250ms``, ``15m`` or ``1h30m``, held as whole milliseconds."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(value: object) -> int:
    """Return the number of milliseconds in ``value`` (a duration string or seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. 500ms, 30s, 15m, 2h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; durations are zero or more")
        return round(value * 1000)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if _WHOLE.fullmatch(text):
            return round(sum(float(n) * _UNIT_MS[u] for n, u in _PART.findall(text)))
    raise ValueError(
        f"{value!r} is not a duration; write e.g. 500ms, 30s, 15m, 2h, 7d or 1h30m "
        "(a bare number means seconds)"
    )


def parse_timedelta(text: str | None) -> timedelta | None:
    """Return the span ``text`` names (``1h``, ``2d``); ValueError if it names none, or too long a one."""
    try:
        return None if text is None else timedelta(milliseconds=parse_duration(text))
    except OverflowError:
        raise ValueError(f"{text} is too long a duration") from None


def format_duration(ms: int) -> str:
    """Return the shortest exact human form of ``ms`` milliseconds (``90000`` → ``1m30s``)."""
    parts, rest = [], ms
    for unit, size in reversed(_UNIT_MS.items()):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[
    int, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
"""A duration field: accepts ``30s``-style strings or seconds, holds milliseconds."""
