"""Topic routing as RabbitMQ does it: ``*`` is exactly one word, ``#`` is zero or more.

Pure functions, used to validate the topology (no job type may reach two groups) and by the
in-memory publisher.  A differential test checks them against the real broker, because fakes
of topic routing are a known source of bugs (``a.#`` must match ``a``).
"""

from __future__ import annotations

from functools import lru_cache

_FRESH_WORD = "x"


def matches(pattern: str, routing_key: str) -> bool:
    """Return whether a topic binding ``pattern`` matches ``routing_key``."""
    return _matches(tuple(pattern.split(".")), tuple(routing_key.split(".")))


@lru_cache(maxsize=4096)
def _matches(pattern: tuple[str, ...], key: tuple[str, ...]) -> bool:
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # '#' eats zero words, or one word and stays.
        return _matches(rest, key) or (bool(key) and _matches(pattern, key[1:]))
    if not key:
        return False
    return (head == "*" or head == key[0]) and _matches(rest, key[1:])


def overlap(first: str, second: str) -> str | None:
    """Return a routing key matched by both patterns, or ``None`` when no key is."""
    found = _overlap(tuple(first.split(".")), tuple(second.split(".")))
    return None if found is None else ".".join(found)


@lru_cache(maxsize=4096)
def _overlap(p: tuple[str, ...], q: tuple[str, ...]) -> tuple[str, ...] | None:
    if not p and not q:
        return ()
    if p and p[0] == "#":
        # Either p's '#' matches nothing here, or it swallows the word q produces next.
        skip = _overlap(p[1:], q)
        if skip is not None or not q:
            return skip
        if q[0] == "#":
            return _overlap(p, q[1:])
        tail = _overlap(p, q[1:])
        return None if tail is None else (_word(q[0], "*"), *tail)
    if q and q[0] == "#":
        return _overlap(q, p)
    if not p or not q:
        return None
    a, b = p[0], q[0]
    if a != b and "*" not in (a, b):
        return None
    tail = _overlap(p[1:], q[1:])
    return None if tail is None else (_word(a, b), *tail)


def _word(a: str, b: str) -> str:
    """Return a concrete word matched by both single-word tokens."""
    if a != "*":
        return a
    return b if b != "*" else _FRESH_WORD


def is_pattern(job_type: str) -> bool:
    """Return whether ``job_type`` holds a wildcard word (``*`` or ``#``)."""
    return any(word in ("*", "#") for word in job_type.split("."))
