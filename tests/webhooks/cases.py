"""One signed delivery per scheme and option set, for the tests every scheme must pass."""

from collections.abc import Callable
from dataclasses import dataclass

from tests.webhooks.signing import (
    generate_standard_keypair,
    sign_github,
    sign_hmac,
    sign_standard_ed25519,
    sign_stripe,
)
from webhooks.schemes.base import Verifier
from webhooks.schemes.hmac_header import HmacVerifier, StripeVerifier, github_verifier
from webhooks.schemes.standard import StandardVerifier, sign_standard

NOW = 1_700_000_000
BODY = b'{"id": "evt_1NG8Du2eZvKYlo2C", "type": "invoice.paid", "data": {"amount": 100}}'
# The same JSON as BODY, re-serialised the way a careless receiver would before verifying.
RESERIALISED = b'{"id":"evt_1NG8Du2eZvKYlo2C","type":"invoice.paid","data":{"amount":100}}'

GITHUB_SECRET = b"github secret one"
STRIPE_SECRET = b"whsec_stripe0123456789abcdef"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_STANDARD_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
STANDARD_PRIVATE, STANDARD_PUBLIC = generate_standard_keypair()
HMAC_SECRET = b"generic secret"

Sign = Callable[[bytes, int], dict[str, str]]


@dataclass(frozen=True)
class Case:
    """A scheme's verifier, how its sender signs, and the verifier an attacker's key would need."""

    name: str
    make: Callable[[], Verifier]
    sign: Sign
    sign_with_other_secret: Sign
    signature_header: str


def github_headers(secret: bytes) -> Sign:
    def sign(body: bytes, timestamp: int) -> dict[str, str]:
        return {
            "x-hub-signature-256": sign_github(secret, body),
            "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "x-github-event": "push",
        }

    return sign


def stripe_headers(secret: bytes) -> Sign:
    return lambda body, timestamp: {"stripe-signature": sign_stripe(secret, timestamp, body)}


def standard_headers(secret: str) -> Sign:
    def sign(body: bytes, timestamp: int) -> dict[str, str]:
        signer = sign_standard_ed25519 if secret.startswith("whsk_") else sign_standard
        return {
            "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signer(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp, body),
        }

    return sign


HMAC_OPTIONS = {
    "hmac-sha256-hex": {"prefix": "sha256="},
    "hmac-sha1-base64": {"algorithm": "sha1", "encoding": "base64"},
    "hmac-sha512-timestamped": {"algorithm": "sha512", "timestamp_header": "x-timestamp"},
}


def hmac_headers(secret: bytes, options: dict[str, str]) -> Sign:
    def sign(body: bytes, timestamp: int) -> dict[str, str]:
        stamped = "timestamp_header" in options
        headers = {
            "x-signature": sign_hmac(
                secret,
                body,
                algorithm=options.get("algorithm", "sha256"),
                encoding=options.get("encoding", "hex"),
                prefix=options.get("prefix", ""),
                timestamp=timestamp if stamped else None,
            )
        }
        if stamped:
            headers["x-timestamp"] = str(timestamp)
        return headers

    return sign


CASES = [
    Case(
        "github",
        lambda: github_verifier([GITHUB_SECRET]),
        github_headers(GITHUB_SECRET),
        github_headers(b"another endpoint's secret"),
        "x-hub-signature-256",
    ),
    Case(
        "stripe",
        lambda: StripeVerifier([STRIPE_SECRET]),
        stripe_headers(STRIPE_SECRET),
        stripe_headers(b"whsec_another_endpoint"),
        "stripe-signature",
    ),
    Case(
        "standard-hmac",
        lambda: StandardVerifier([STANDARD_SECRET]),
        standard_headers(STANDARD_SECRET),
        standard_headers(OTHER_STANDARD_SECRET),
        "webhook-signature",
    ),
    Case(
        "standard-ed25519",
        lambda: StandardVerifier([STANDARD_PUBLIC]),
        standard_headers(STANDARD_PRIVATE),
        standard_headers(generate_standard_keypair()[0]),
        "webhook-signature",
    ),
    *(
        Case(
            name,
            lambda options=options: HmacVerifier([HMAC_SECRET], header="X-Signature", **options),
            hmac_headers(HMAC_SECRET, options),
            hmac_headers(b"another secret", options),
            "x-signature",
        )
        for name, options in HMAC_OPTIONS.items()
    ),
]
CASE_IDS = [case.name for case in CASES]
