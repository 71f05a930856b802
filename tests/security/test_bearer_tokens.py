"""OAuth2/OIDC bearer tokens: one test per JWT pitfall of RFC 8725, through the real API.

An identity provider's JWKS is served on loopback (counting fetches), and an attacker's
listener counts any request taskq would make to a URL a token names (``jku``, ``x5u``).
Every refused token gets 401 and leaves nothing published or stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.security.conftest import Door, Opener, free_port
from topology.errors import SettingsError
from topology.settings import load_settings

pytestmark = pytest.mark.rabbitmq

ISSUER = "https://idp.example.com/"
AUDIENCE = "https://taskq.example.com"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ATTACKER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else None
    if algorithm is None:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


@dataclass
class Listener:
    """A loopback HTTP server counting requests: the IdP's JWKS, or an attacker's trap."""

    url: str = ""
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    # Bearer tokens never touch the job store: SQLite alone is enough here.
    return f"sqlite:///{tmp_path}/jobs.sqlite3"


@pytest.fixture
async def idp() -> AsyncIterator[Listener]:
    listener = Listener()
    document = {"keys": [_jwk(RSA_KEY, "rsa-1"), _jwk(EC_KEY, "ec-1")]}

    async def jwks(request: web.Request) -> web.Response:
        listener.hits.append(request.path)
        return web.json_response(document)

    async with _served(listener, jwks):
        yield listener


@pytest.fixture
async def trap() -> AsyncIterator[Listener]:
    listener = Listener()

    async def anything(request: web.Request) -> web.Response:
        listener.hits.append(request.path)
        return web.json_response({"keys": [_jwk(ATTACKER_KEY, "evil")]})

    async with _served(listener, anything):
        yield listener


class _served:
    def __init__(self, listener: Listener, handler: Any) -> None:
        self.listener = listener
        self.app = web.Application()
        self.app.router.add_get("/{tail:.*}", handler)

    async def __aenter__(self) -> Listener:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.listener.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        return self.listener

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def door(open_door: Opener, idp: Listener) -> AsyncIterator[Door]:
    env = {
        "TASKQ_JWKS_URL": idp.url,
        "TASKQ_JWT_ISSUER": ISSUER,
        "TASKQ_JWT_AUDIENCE": AUDIENCE,
        "TASKQ_JWKS_MIN_REFRESH": "60",
    }
    async with open_door(env) as opened:
        yield opened


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "service-a",
        "iat": now,
        "exp": now + 300,
        "scope": "jobs:write jobs:read",
        "tenant": "acme",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(
    payload: dict[str, Any] | None = None,
    *,
    key: Any = RSA_KEY,
    algorithm: str = "RS256",
    kid: str | None = "rsa-1",
    typ: str | None = "at+jwt",
    **header: Any,
) -> str:
    headers = {"kid": kid, "typ": typ, **header}
    headers = {k: v for k, v in headers.items() if v is not None}
    if typ is None:
        headers["typ"] = None  # PyJWT adds JWT unless told not to
    return jwt.encode(payload or claims(), key, algorithm=algorithm, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """Return a token PyJWT would refuse to make: ``none``, or HMAC under a public key."""
    signing = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(payload))}"
    if secret is None:
        return f"{signing}."
    mac = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(mac)}"


def rs256(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """Return a token with any header, really signed with the IdP's key (PyJWT checks headers)."""
    signing = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(payload))}"
    signature = RSA_KEY.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing}.{_b64(signature)}"


async def refused(door: Door, presented: str, reason: str | None = None) -> None:
    """Assert the token gets 401 on submission, with ``reason``, and nothing changes."""
    before = await door.snapshot()
    async with door.client(presented) as caller:
        answer = await caller.post("/jobs", json={"type": "email"})
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"].startswith(
        'Bearer realm="taskq", error="invalid_token"'
    )
    if reason is not None:
        assert answer.json()["detail"] == reason
    assert await door.snapshot() == before


async def test_a_valid_access_token_passes_with_its_tenant_and_scopes(door: Door) -> None:
    async with door.client(token()) as caller:
        answer = await caller.post("/jobs", json={"type": "email", "delay": 600})
        assert answer.status_code == 202, answer.text
        assert answer.json()["tenant"] == "acme"
        denied = await caller.get("/metrics")
    assert denied.status_code == 403  # no metrics:read in its scope claim
    limited = token(claims(job_types=["email.*"]), kid="ec-1", key=EC_KEY, algorithm="ES256")
    async with door.client(limited) as caller:
        assert (await caller.post("/jobs", json={"type": "job.x"})).status_code == 403


@pytest.mark.parametrize("spelling", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_is_refused_in_every_spelling(door: Door, spelling: str) -> None:
    # RFC 8725 section 2.1: an unsigned token must never pass.
    unsigned = forged({"alg": spelling, "typ": "at+jwt", "kid": "rsa-1"}, claims(), None)
    await refused(door, unsigned, "the token's algorithm is not one of ES256, RS256")


async def test_hs256_signed_with_the_public_key_is_refused(door: Door) -> None:
    # RFC 8725 section 2.1: key confusion. The public key is public; as an HMAC secret it
    # would let anyone sign.
    for secret in (RSA_PEM, orjson.dumps(_jwk(RSA_KEY, "rsa-1"))):
        confused = forged({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}, claims(), secret)
        await refused(door, confused, "the token's algorithm is not one of ES256, RS256")


async def test_a_key_is_used_with_its_own_algorithm_only(door: Door) -> None:
    # RFC 8725 section 3.1: the EC key verifies ES256, never an RS256 token naming it.
    await refused(
        door,
        token(kid="ec-1"),
        "the token's algorithm does not match its key's",
    )


async def test_an_unknown_kid_refetches_the_keys_at_most_once_per_interval(
    door: Door, idp: Listener
) -> None:
    async with door.client(token()) as caller:
        assert (await caller.get("/jobs")).status_code == 200
    fetched = len(idp.hits)
    for _ in range(20):
        await refused(
            door,
            token(kid=f"rotated-{uuid.uuid4()}"),
            "the token's key id (kid) names no key of the issuer",
        )
    assert len(idp.hits) - fetched <= 1  # one refresh, not twenty


@pytest.mark.parametrize(
    "kid", ["../../../../etc/passwd", "' OR '1'='1' --", "rsa-1\x00", "x" * 300, 42]
)
async def test_a_hostile_kid_is_only_looked_up(door: Door, idp: Listener, kid: Any) -> None:
    # RFC 8725 section 3.10: header values are input; kid is a dict key here, nothing more.
    await refused(door, rs256({"alg": "RS256", "typ": "at+jwt", "kid": kid}, claims()))
    assert all(hit == "/.well-known/jwks.json" for hit in idp.hits)


@pytest.mark.parametrize("header", ["jku", "x5u"])
async def test_urls_in_the_token_are_never_fetched(door: Door, trap: Listener, header: str) -> None:
    # RFC 8725 section 3.10: a token naming where to find its key is an SSRF vector.
    evil = token(key=ATTACKER_KEY, kid="evil", **{header: trap.url})
    await refused(door, evil, "the token's key id (kid) names no key of the issuer")
    embedded = token(
        key=ATTACKER_KEY,
        kid="rsa-1",
        x5c=[base64.b64encode(b"not our certificate").decode()],
        **{header: trap.url},
    )
    await refused(door, embedded, "the token's signature or claims are invalid")
    assert trap.hits == []


@pytest.mark.parametrize(
    ("presented", "reason"),
    [
        ("a" * 16384, "the token is longer than 8192 characters"),
        ("e30.e30.!!!not-base64!!!", "the token is not a well-formed JWT"),
        ("@@@.@@@.@@@", "the token is not a well-formed JWT"),
        ("one.two", "the token is not a well-formed JWT"),
        ("a.b.c.d.e", "the token is not a well-formed JWT"),
    ],
)
async def test_malformed_tokens_are_refused_without_a_500(
    door: Door, presented: str, reason: str
) -> None:
    await refused(door, presented, reason)


async def test_an_expired_token_is_refused_past_the_leeway(door: Door) -> None:
    now = int(time.time())
    leeway = 30
    await refused(door, token(claims(exp=now - leeway - 5)), "the token has expired")
    async with door.client(token(claims(exp=now - leeway + 5))) as caller:
        assert (await caller.get("/jobs")).status_code == 200  # within the leeway


async def test_a_token_not_valid_yet_is_refused(door: Door) -> None:
    now = int(time.time())
    await refused(door, token(claims(nbf=now + 300)), "the token is not valid yet (nbf or iat)")
    await refused(door, token(claims(iat=now + 300)), "the token is not valid yet (nbf or iat)")


@pytest.mark.parametrize("claim", ["exp", "aud", "iss", "sub"])
async def test_a_token_without_a_required_claim_is_refused(door: Door, claim: str) -> None:
    await refused(door, token(claims(**{claim: None})), f"the token lacks the {claim} claim")


async def test_the_audience_must_be_ours(door: Door) -> None:
    # RFC 8725 section 3.9.
    await refused(
        door, token(claims(aud="https://other.example.com")), "the token is for another audience"
    )
    await refused(
        door,
        token(claims(aud=["https://a.example", "https://b.example"])),
        "the token is for another audience",
    )
    async with door.client(token(claims(aud=["https://a.example", AUDIENCE]))) as caller:
        assert (await caller.get("/jobs")).status_code == 200


async def test_the_issuer_must_be_ours(door: Door) -> None:
    # RFC 8725 section 3.8.
    await refused(
        door, token(claims(iss="https://evil.example.com/")), "the token is from another issuer"
    )


@pytest.mark.parametrize("typ", ["JWT", "id_token", None])
async def test_only_an_access_token_is_accepted(door: Door, typ: str | None) -> None:
    # RFC 8725 section 3.11: an ID token (typ JWT) is not an access token.
    await refused(door, token(typ=typ), "the token is not an access token (its typ header)")


async def test_an_unknown_critical_header_is_refused(door: Door) -> None:
    await refused(door, token(crit=["exp-ext"], **{"exp-ext": 1}))


async def test_a_hostile_tenant_claim_is_refused(door: Door) -> None:
    await refused(
        door, token(claims(tenant="../other")), "the token's tenant claim is missing or invalid"
    )


async def test_a_token_in_the_query_string_is_refused(door: Door) -> None:
    before = await door.snapshot()
    async with door.client() as caller:
        answer = await caller.post(
            "/jobs", json={"type": "email"}, params={"access_token": token()}
        )
    assert answer.status_code == 401
    assert await door.snapshot() == before


async def test_an_unreachable_identity_provider_answers_503(open_door: Opener) -> None:
    env = {
        "TASKQ_JWKS_URL": f"http://127.0.0.1:{free_port()}/jwks.json",
        "TASKQ_JWT_ISSUER": ISSUER,
        "TASKQ_JWT_AUDIENCE": AUDIENCE,
        "TASKQ_JWKS_TIMEOUT": "2",
    }
    async with open_door(env) as door:
        before = await door.snapshot()
        async with door.client(token()) as caller:
            answer = await caller.post("/jobs", json={"type": "email"})
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "5"
        assert await door.snapshot() == before


async def test_a_configured_pem_key_verifies_and_refuses_hmac_confusion(
    open_door: Opener, tmp_path: Path
) -> None:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(RSA_PEM)
    env = {
        "TASKQ_JWT_KEYS_FILE": str(pem),
        "TASKQ_JWT_ISSUER": ISSUER,
        "TASKQ_JWT_AUDIENCE": AUDIENCE,
    }
    async with open_door(env) as door:
        async with door.client(token(kid=None)) as caller:
            assert (await caller.get("/jobs")).status_code == 200
        confused = forged({"alg": "HS256", "typ": "at+jwt"}, claims(), RSA_PEM)
        await refused(door, confused)


@pytest.mark.parametrize("algorithms", ["none", "HS256", "RS256,HS512", ""])
def test_settings_refuse_none_and_hmac_algorithms(algorithms: str) -> None:
    with pytest.raises(SettingsError, match="TASKQ_JWT_ALGORITHMS"):
        load_settings({"TASKQ_JWT_ALGORITHMS": algorithms or " , "})
