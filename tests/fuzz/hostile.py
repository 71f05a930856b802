"""A seeded stream of hostile requests: the same stream for a given seed, every time.

Each request is one of the kinds a hostile client sends: values over every limit (bytes, not
characters), numbers and dates that overflow, types the worker could not route, NUL and
control characters, batches mixing good and bad members, huge ids and URLs, oversized
headers, bad JSON, and webhook deliveries with forged signatures. ``bench/hostile_soak.py``
runs 10,000 of them; the fuzz suite runs a few hundred.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hostile:
    """One request: method, path, headers and a raw body."""

    kind: str
    method: str
    path: str
    headers: dict[str, str | bytes] = field(default_factory=dict)
    body: bytes | None = None


_ODD = ["\x00", "\x01", "\x7f", "\u202e", "\u2066", "é", "😀", "*", "#", "..", " ", "\\", '"']


def _text(rng: random.Random, *, lo: int = 0, hi: int = 400) -> str:
    size = rng.choice([lo, 1, 64, 200, 255, 256, 300, hi])
    pool = [*rng.sample(_ODD, 3), "a", "b", "."]
    return "".join(rng.choice(pool) for _ in range(size))


def _number(rng: random.Random) -> Any:
    return rng.choice([0, -1, 1e15, 2**63, 2**70, 1e308, -1e308, 0.5, 10**30, 3.2e9])


def _job(rng: random.Random) -> dict[str, Any]:
    job: dict[str, Any] = {"type": rng.choice(["email", "email.welcome", "job.x", _text(rng)])}
    for name, make in _FIELDS.items():
        if rng.random() < 0.35:
            job[name] = make(rng)
    return job


_FIELDS: dict[str, Callable[[random.Random], Any]] = {
    "payload": lambda r: rng_payload(r),
    "priority": lambda r: r.choice(["urgent", "low", "x" * 300, 3, None]),
    "delay": _number,
    "run_at": lambda r: r.choice(
        ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2030-01-01T00:00:00Z", "x"]
    ),
    "max_attempts": lambda r: r.choice([0, 1, 2**70, -5, 1000, 1001]),
    "idempotency_key": lambda r: _text(r, lo=1),
    "callback_url": lambda r: r.choice(
        ["https://example.com/\x00", "https://" + "a" * 3000, "ftp://x", "https://ok.example/cb"]
    ),
    "correlation_id": lambda r: _text(r, lo=1),
    "status": lambda r: "succeeded",
}


def rng_payload(rng: random.Random) -> Any:
    """Return a payload with NUL keys, deep nesting or big numbers now and then."""
    return rng.choice(
        [
            {"a\x00": 1},
            {"n": 2**70},
            [[[[[[[[[[["deep"]]]]]]]]]]],
            {"s": _text(rng)},
            "x" * rng.choice([10, 300_000]),
        ]
    )


def _kinds(key: str) -> list[Callable[[random.Random], Hostile]]:
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def job(r: random.Random) -> Hostile:
        return Hostile("job", "POST", "/jobs", auth, _json(_job(r)))

    def batch(r: random.Random) -> Hostile:
        jobs = [_job(r) for _ in range(r.randint(1, 6))]
        return Hostile("batch", "POST", "/jobs/batch", auth, _json({"jobs": jobs}))

    def bad_json(r: random.Random) -> Hostile:
        body = r.choice(
            [b"{", b'{"type": NaN}', b"\xef\xbb\xbf{}", b"[" * 5000, b'{"type":"\\ud800"}']
        )
        return Hostile("bad-json", "POST", "/jobs", auth, body)

    def get(r: random.Random) -> Hostile:
        job_id = r.choice(["x" * 10_000, "%00", _text(r), "01a2"])
        return Hostile("get", r.choice(["GET", "DELETE"]), f"/jobs/{_quote(job_id)}", auth)

    def listing(r: random.Random) -> Hostile:
        query = r.choice(
            [f"type={_quote(_text(r))}", "limit=0", "limit=99999999999", "cursor=zz", "status=x"]
        )
        return Hostile("list", "GET", f"/jobs?{query}", auth)

    def admin(r: random.Random) -> Hostile:
        older = r.choice(["99999999999999999d", "1e308s", "-1s", "5m", "x" * 40])
        group = r.choice(["default", "email", _quote(_text(r))])
        return Hostile("admin", "GET", f"/admin/dlq/{group}?older_than={_quote(older)}", auth)

    def webhook(r: random.Random) -> Hostile:
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": r.choice(["push", "*", "a b", "x" * 300]),
            "X-GitHub-Delivery": _text(r, lo=1),
            "X-Hub-Signature-256": "sha256=" + "0" * 64,
            "webhook-id": "msg_1",
            "webhook-timestamp": str(r.choice([0, 2**70, 1700000000])),
            "webhook-signature": "v1,AAAA",
        }
        safe = {k: _header_value(v) for k, v in headers.items()}
        source = r.choice(["github", "standard", "nope", "x" * 5000])
        return Hostile("webhook", "POST", f"/webhooks/{source}", safe, _json(_job(r)))

    def headers(r: random.Random) -> Hostile:
        many = {f"X-H{i}": "v" for i in range(r.choice([50, 150]))}
        return Hostile("headers", "GET", "/healthz", {**many, "X-Big": "b" * r.choice([100, 9000])})

    return [job, job, job, batch, bad_json, get, listing, admin, webhook, headers]


def _header_value(text: str) -> bytes:
    """Return ``text`` as raw UTF-8 without what no HTTP client sends: controls, edge spaces."""
    return bytes(b for b in text.encode() if b >= 0x20 and b != 0x7F).strip() or b"x"


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()  # integers past 64 bits too, as a client may send


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def stream(seed: int, count: int, key: str) -> Iterator[Hostile]:
    """Yield ``count`` hostile requests, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    kinds = _kinds(key)
    for _ in range(count):
        yield rng.choice(kinds)(rng)
