import hashlib
import hmac

import pytest

from tests.webhooks.cases import BODY, NOW
from tests.webhooks.signing import sign_stripe
from topology.errors import MalformedWebhook, SignatureRejected, TimestampRejected
from webhooks.schemes.base import Delivery
from webhooks.schemes.hmac_header import StripeVerifier

SECRET = b"whsec_test_secret"
V1 = "v1=" + "ab" * 32


def verify(value: str, body: bytes = BODY, now: float = NOW, secrets=(SECRET,)) -> Delivery:
    return StripeVerifier(list(secrets)).verify(body, {"stripe-signature": value}, now)


def test_the_secret_is_the_hmac_key_as_written_like_stripe_python():
    # What stripe-python's compute_signature does: HMAC-SHA256(secret.encode(), "{t}.{payload}").
    expected = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_stripe(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"


def test_a_verified_event_gives_its_id_type_and_timestamp():
    delivery = verify(sign_stripe(SECRET, NOW, BODY))
    assert delivery == Delivery(
        delivery_id="evt_1NG8Du2eZvKYlo2C", event="invoice.paid", timestamp=NOW
    )


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-301, False), (-300, True), (-299, True), (0, True), (301, True), (86_400, True)],
)
def test_only_a_too_old_timestamp_is_rejected_as_in_stripe_python(offset: int, accepted: bool):
    value = sign_stripe(SECRET, NOW + offset, BODY)
    if accepted:
        assert verify(value).timestamp == NOW + offset
    else:
        with pytest.raises(TimestampRejected, match="301 s ago"):
            verify(value)


def test_a_custom_tolerance_moves_the_boundary():
    value = sign_stripe(SECRET, NOW - 31, BODY)
    with pytest.raises(TimestampRejected):
        StripeVerifier([SECRET], tolerance=30).verify(BODY, {"stripe-signature": value}, NOW)


def test_a_stale_forgery_is_a_signature_failure_not_a_timestamp_one():
    with pytest.raises(SignatureRejected):
        verify(sign_stripe(b"whsec_wrong", NOW - 3600, BODY))


def test_any_v1_may_match_which_is_how_secrets_roll():
    old, new = b"whsec_old", b"whsec_new"
    both = sign_stripe(old, NOW, BODY) + "," + sign_stripe(new, NOW, BODY).split(",")[1]
    assert verify(both, secrets=[new]).event == "invoice.paid"
    assert verify(sign_stripe(old, NOW, BODY), secrets=[old, new]).event == "invoice.paid"
    with pytest.raises(SignatureRejected, match="no v1 signature"):
        verify(sign_stripe(old, NOW, BODY), secrets=[new])


def test_v0_and_unknown_schemes_are_ignored_beside_a_valid_v1():
    value = f"t={NOW},v0={'00' * 32},v9=whatever,{sign_stripe(SECRET, NOW, BODY).split(',')[1]}"
    assert verify(value).delivery_id == "evt_1NG8Du2eZvKYlo2C"


@pytest.mark.parametrize("value", [f"t={NOW},v0={'00' * 32}", f"t={NOW},v2=abc", f"t={NOW}"])
def test_no_v1_signature_is_a_signature_failure(value: str):
    with pytest.raises(SignatureRejected, match="no v1"):
        verify(value)


@pytest.mark.parametrize(
    "value",
    [
        V1,
        f"t={NOW},t={NOW},{V1}",
        f"t=abc,{V1}",
        f"t=1.5,{V1}",
        f"t=-1,{V1}",
        f"t=+{NOW},{V1}",
        f"t= {NOW},{V1}",
        f"t=,{V1}",
        f"t={NOW},v1",
        f"t={NOW},v1=xyz",
        f"t={NOW},v1=abc",
        f"t={NOW};{V1}",
        f"t={NOW},,{V1}",
    ],
    ids=[
        "no-t",
        "two-t",
        "t-letters",
        "t-fraction",
        "t-negative",
        "t-plus",
        "t-space",
        "t-empty",
        "entry-without-equals",
        "v1-not-hex",
        "v1-odd-hex",
        "semicolon",
        "empty-entry",
    ],
)
def test_an_unparseable_header_is_malformed(value: str):
    with pytest.raises(MalformedWebhook, match="Stripe-Signature"):
        verify(value)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "invoice.paid"}', "'id' and 'type'"),
        (b'{"id": "evt_1", "type": 7}', "'id' and 'type'"),
        (b'{"id": "evt 1", "type": "invoice.paid"}', "event id"),
    ],
)
def test_a_signed_body_without_a_usable_event_is_malformed(body: bytes, problem: str):
    with pytest.raises(MalformedWebhook, match=problem):
        verify(sign_stripe(SECRET, NOW, body), body=body)


def test_an_unsigned_garbage_body_is_refused_before_it_is_parsed():
    with pytest.raises(SignatureRejected):
        verify(sign_stripe(b"whsec_wrong", NOW, b"not json"), body=b"not json")


def test_ten_signatures_are_considered_and_eleven_are_refused():
    valid = sign_stripe(SECRET, NOW, BODY).split(",")[1]
    nine_wrong = ",".join([V1] * 9)
    assert verify(f"t={NOW},{nine_wrong},{valid}").event == "invoice.paid"
    with pytest.raises(MalformedWebhook, match="11 signatures"):
        verify(f"t={NOW},{nine_wrong},{V1},{valid}")
