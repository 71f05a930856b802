import pytest

from tests.webhooks.cases import NOW
from tests.webhooks.signing import sign_github
from topology.errors import MalformedWebhook, SignatureRejected
from webhooks.schemes.base import Delivery
from webhooks.schemes.hmac_header import github_verifier

# docs.github.com, "Validating webhook deliveries": the published test values.
VECTOR_SECRET = b"It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "x-hub-signature-256": signature,
        "x-github-delivery": DELIVERY,
        "x-github-event": "push",
    }


def test_the_published_vector_signs_and_verifies():
    assert sign_github(VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE
    delivery = github_verifier([VECTOR_SECRET]).verify(VECTOR_BODY, headers(), NOW)
    assert delivery == Delivery(delivery_id=DELIVERY, event="push", timestamp=None)


def test_any_time_is_accepted_because_github_signs_no_timestamp():
    verifier = github_verifier([VECTOR_SECRET])
    assert verifier.verify(VECTOR_BODY, headers(), 0).timestamp is None
    assert verifier.verify(VECTOR_BODY, headers(), 10**12).delivery_id == DELIVERY


def test_rotation_accepts_old_and_new_secrets_until_the_old_one_is_retired():
    old, new = b"old secret", b"new secret"
    during = github_verifier([old, new])
    for secret in (old, new):
        during.verify(VECTOR_BODY, headers(sign_github(secret, VECTOR_BODY)), NOW)
    after = github_verifier([new])
    after.verify(VECTOR_BODY, headers(sign_github(new, VECTOR_BODY)), NOW)
    with pytest.raises(SignatureRejected, match="no configured secret"):
        after.verify(VECTOR_BODY, headers(sign_github(old, VECTOR_BODY)), NOW)


@pytest.mark.parametrize("missing", ["x-github-delivery", "x-github-event"])
def test_a_missing_delivery_or_event_header_is_malformed(missing: str):
    sent = headers()
    del sent[missing]
    with pytest.raises(MalformedWebhook, match=missing):
        github_verifier([VECTOR_SECRET]).verify(VECTOR_BODY, sent, NOW)


@pytest.mark.parametrize(
    "signature",
    [
        VECTOR_SIGNATURE.removeprefix("sha256="),
        "sha1=" + VECTOR_SIGNATURE.removeprefix("sha256="),
        "sha256=" + "z" * 64,
        "sha256=" + "a" * 63,
        "sha256=",
        "sha256= 757107ea",
    ],
    ids=["no-prefix", "sha1-prefix", "not-hex", "odd-length", "empty", "space"],
)
def test_an_unparseable_signature_is_malformed(signature: str):
    with pytest.raises(MalformedWebhook, match="x-hub-signature-256"):
        github_verifier([VECTOR_SECRET]).verify(VECTOR_BODY, headers(signature), NOW)


def test_a_well_formed_signature_of_the_wrong_length_is_only_a_mismatch():
    with pytest.raises(SignatureRejected):
        github_verifier([VECTOR_SECRET]).verify(VECTOR_BODY, headers("sha256=" + "ab" * 20), NOW)


def test_upper_case_hex_is_the_same_signature():
    upper = "sha256=" + VECTOR_SIGNATURE.removeprefix("sha256=").upper()
    assert github_verifier([VECTOR_SECRET]).verify(VECTOR_BODY, headers(upper), NOW).event == "push"


def test_a_delivery_id_that_cannot_be_an_idempotency_key_is_malformed():
    sent = headers() | {"x-github-delivery": "has spaces in it"}
    with pytest.raises(MalformedWebhook, match="x-github-delivery"):
        github_verifier([VECTOR_SECRET]).verify(VECTOR_BODY, sent, NOW)
