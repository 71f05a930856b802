import base64

import pytest

from tests.webhooks.cases import NOW, OTHER_STANDARD_SECRET
from tests.webhooks.signing import (
    generate_standard_keypair,
    generate_standard_secret,
    sign_standard_ed25519,
)
from topology.errors import MalformedWebhook, SignatureRejected, TimestampRejected
from webhooks.schemes.base import Delivery
from webhooks.schemes.standard import StandardVerifier, sign_standard

# standard-webhooks libraries/python/tests/test_webhooks.py: the published test values.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
BODY = b'{"type": "contact.created", "data": {"id": 1}}'


def headers(signature: str, msg_id: str = VECTOR_ID, timestamp: int | str = NOW) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def signed(secret: str = VECTOR_SECRET, body: bytes = BODY, timestamp: int = NOW) -> dict[str, str]:
    signer = sign_standard_ed25519 if secret.startswith("whsk_") else sign_standard
    return headers(signer(secret, VECTOR_ID, timestamp, body), timestamp=timestamp)


def test_the_published_vector_signs_and_verifies():
    assert sign_standard(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    sent = headers(VECTOR_SIGNATURE, timestamp=VECTOR_TS)
    delivery = StandardVerifier([VECTOR_SECRET]).verify(VECTOR_BODY, sent, VECTOR_TS)
    assert delivery == Delivery(delivery_id=VECTOR_ID, event=None, timestamp=VECTOR_TS)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-301, False), (-300, True), (-299, True), (0, True), (299, True), (300, True), (301, False)],
)
def test_the_window_is_plus_or_minus_the_tolerance(offset: int, accepted: bool):
    sent = signed(timestamp=NOW + offset)
    verifier = StandardVerifier([VECTOR_SECRET])
    if accepted:
        assert verifier.verify(BODY, sent, NOW).timestamp == NOW + offset
    else:
        with pytest.raises(TimestampRejected, match="ago" if offset < 0 else "future"):
            verifier.verify(BODY, sent, NOW)


@pytest.mark.parametrize("part", ["webhook-id", "webhook-timestamp"])
def test_the_id_and_timestamp_are_signed_too(part: str):
    sent = signed() | {part: {"webhook-id": "msg_other", "webhook-timestamp": str(NOW + 1)}[part]}
    with pytest.raises(SignatureRejected):
        StandardVerifier([VECTOR_SECRET]).verify(BODY, sent, NOW)


def test_rotation_accepts_old_and_new_keys_until_the_old_one_is_retired():
    new = generate_standard_secret()
    both = signed(VECTOR_SECRET)["webhook-signature"] + " " + signed(new)["webhook-signature"]
    assert StandardVerifier([new]).verify(BODY, headers(both), NOW).event == "contact.created"
    for secret in (VECTOR_SECRET, new):
        StandardVerifier([VECTOR_SECRET, new]).verify(BODY, signed(secret), NOW)
    with pytest.raises(SignatureRejected, match="no signature"):
        StandardVerifier([new]).verify(BODY, signed(VECTOR_SECRET), NOW)


def test_ed25519_signatures_verify_with_the_public_key_only():
    private, public = generate_standard_keypair()
    assert private.startswith("whsk_")
    assert public.startswith("whpk_")
    assert StandardVerifier([public]).verify(BODY, signed(private), NOW).delivery_id == VECTOR_ID
    with pytest.raises(SignatureRejected):
        StandardVerifier([generate_standard_keypair()[1]]).verify(BODY, signed(private), NOW)


def test_hmac_and_ed25519_keys_mix_and_each_checks_its_own_kind():
    private, public = generate_standard_keypair()
    verifier = StandardVerifier([VECTOR_SECRET, public])
    assert verifier.verify(BODY, signed(private), NOW).timestamp == NOW
    assert verifier.verify(BODY, signed(VECTOR_SECRET), NOW).timestamp == NOW
    # An HMAC signature's bytes presented as v1a must not pass as ed25519, nor the reverse.
    hmac_bytes = signed(VECTOR_SECRET)["webhook-signature"].removeprefix("v1,")
    with pytest.raises(SignatureRejected):
        verifier.verify(BODY, headers("v1a," + hmac_bytes), NOW)


def test_the_64_byte_libsodium_private_key_form_signs_the_same():
    private, public = generate_standard_keypair()
    seed = base64.b64decode(private.removeprefix("whsk_"))
    both = (
        "whsk_" + base64.b64encode(seed + base64.b64decode(public.removeprefix("whpk_"))).decode()
    )
    assert sign_standard_ed25519(both, "m", 1, b"x") == sign_standard_ed25519(private, "m", 1, b"x")


@pytest.mark.parametrize(
    "signature",
    ["v2,abcd", "v1b,abcd v0,abcd", "v1a," + "A" * 86 + "=="],
    ids=["v2", "v1b-and-v0", "v1a-without-a-public-key"],
)
def test_only_versions_without_a_key_are_a_signature_failure(signature: str):
    with pytest.raises(SignatureRejected, match="no signature of a version"):
        StandardVerifier([VECTOR_SECRET]).verify(BODY, headers(signature), NOW)


def test_unknown_versions_are_skipped_beside_a_valid_one():
    sent = signed()
    sent["webhook-signature"] = "v2,whatever " + sent["webhook-signature"] + " v0,x"
    assert StandardVerifier([VECTOR_SECRET]).verify(BODY, sent, NOW).delivery_id == VECTOR_ID


@pytest.mark.parametrize(
    ("signature", "problem"),
    [
        ("v1", "<version>,<base64>"),
        ("v1g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "<version>,<base64>"),
        ("v1,", "not a base64"),
        ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", "not a base64"),
        ("v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=", "not a base64"),
        ("v1,!!!!", "not a base64"),
        ("v1a,####", "not a base64"),
    ],
    ids=["bare-version", "no-comma", "empty", "unpadded", "urlsafe", "symbols", "v1a-symbols"],
)
def test_an_unparseable_signature_list_is_malformed(signature: str, problem: str):
    with pytest.raises(MalformedWebhook, match=problem):
        StandardVerifier([VECTOR_SECRET]).verify(BODY, headers(signature), NOW)


@pytest.mark.parametrize(
    "timestamp", ["", "abc", "1614265330.5", "-5", "+1614265330", " 1614265330", "1e9", "9" * 40]
)
def test_a_garbage_timestamp_is_malformed(timestamp: str):
    sent = signed() | {"webhook-timestamp": timestamp}
    with pytest.raises(MalformedWebhook, match="webhook-timestamp"):
        StandardVerifier([VECTOR_SECRET]).verify(BODY, sent, NOW)


@pytest.mark.parametrize(
    ("msg_id", "problem"),
    [("", "missing"), ("msg.1", "'.'"), ("msg 1", "printable"), ("x" * 201, "printable")],
)
def test_a_missing_or_unusable_id_is_malformed(msg_id: str, problem: str):
    sent = signed() | {"webhook-id": msg_id}
    with pytest.raises(MalformedWebhook, match=problem):
        StandardVerifier([VECTOR_SECRET]).verify(BODY, sent, NOW)


@pytest.mark.parametrize(
    ("body", "event"),
    [
        (b'{"type": "user.created"}', "user.created"),
        (b'{"type": 3}', None),
        (b'["type"]', None),
        (b"plain text is fine: the signature authenticates", None),
        (b"\xff\x00", None),
    ],
)
def test_the_event_is_the_bodys_string_type_and_non_json_bodies_still_verify(
    body: bytes, event: str | None
):
    assert StandardVerifier([VECTOR_SECRET]).verify(body, signed(body=body), NOW).event == event


def test_ten_signatures_are_considered_and_eleven_are_refused():
    wrong = sign_standard(OTHER_STANDARD_SECRET, VECTOR_ID, NOW, BODY)
    valid = signed()["webhook-signature"]
    verifier = StandardVerifier([VECTOR_SECRET])
    assert verifier.verify(BODY, headers(" ".join([wrong] * 9 + [valid])), NOW).event
    with pytest.raises(MalformedWebhook, match="11 signatures"):
        verifier.verify(BODY, headers(" ".join([wrong] * 10 + [valid])), NOW)


def test_a_new_secret_is_random_base64_of_32_bytes():
    first, second = generate_standard_secret(), generate_standard_secret()
    assert first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert StandardVerifier([first]).verify(BODY, signed(first), NOW).timestamp == NOW
