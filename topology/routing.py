"""Topic routing as RabbitMQ does it: ``*`` is exactly one word, ``#`` is zero or more."""

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


def covers(general: str, specific: str) -> bool:
    """Return whether every routing key ``specific`` matches is matched by ``general`` too."""
    return _covers(tuple(general.split(".")), tuple(specific.split(".")))


@lru_cache(maxsize=4096)
def _covers(general: tuple[str, ...], specific: tuple[str, ...]) -> bool:
    # Both patterns as automata over the words they name plus one word neither names (every
    # other word behaves like it): walk their determinised product, and look for a state
    # where ``specific`` accepts and ``general`` does not.
    words = {w for w in (*general, *specific) if w not in ("*", "#")}
    fresh = _FRESH_WORD
    while fresh in words:
        fresh += "x"
    alphabet = (*words, fresh)
    start = (_closure(specific, {0}), _closure(general, {0}))
    # A routing key has at least one word, so acceptance counts only after the first step.
    todo = [
        step
        for word in alphabet
        if (step := (_step(specific, start[0], word), _step(general, start[1], word)))[0]
    ]
    seen = set(todo)
    while todo:
        mine, theirs = todo.pop()
        if len(specific) in mine and len(general) not in theirs:
            return False
        for word in alphabet:
            step = (_step(specific, mine, word), _step(general, theirs, word))
            if step[0] and step not in seen:
                seen.add(step)
                todo.append(step)
    return True


def _closure(pattern: tuple[str, ...], states: set[int]) -> frozenset[int]:
    """Return ``states`` plus every state reached by letting a ``#`` match no word."""
    out, todo = set(states), list(states)
    while todo:
        at = todo.pop()
        if at < len(pattern) and pattern[at] == "#" and at + 1 not in out:
            out.add(at + 1)
            todo.append(at + 1)
    return frozenset(out)


def _step(pattern: tuple[str, ...], states: frozenset[int], word: str) -> frozenset[int]:
    """Return the states after reading ``word``: ``#`` stays, ``*`` and an equal word advance."""
    nxt: set[int] = set()
    for at in states:
        if at == len(pattern):
            continue
        token = pattern[at]
        if token == "#":
            nxt.add(at)
        elif token in ("*", word):
            nxt.add(at + 1)
    return _closure(pattern, nxt)


def is_pattern(job_type: str) -> bool:
    """Return whether ``job_type`` holds a wildcard word (``*`` or ``#``)."""
    return any(word in ("*", "#") for word in job_type.split("."))
