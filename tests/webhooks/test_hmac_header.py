import base64
import hashlib
import hmac
import itertools

import pytest

from tests.webhooks.cases import BODY, NOW
from tests.webhooks.signing import sign_hmac
from topology.errors import MalformedWebhook, SignatureRejected, TimestampRejected
from webhooks.schemes.base import Delivery
from webhooks.schemes.hmac_header import HmacVerifier

SECRET = b"generic secret"
OPTIONS = list(
    itertools.product(
        ["sha1", "sha256", "sha512"], ["hex", "base64"], ["", "sha256="], [None, "X-Timestamp"]
    )
)


@pytest.mark.parametrize(("algorithm", "encoding", "prefix", "timestamp_header"), OPTIONS)
def test_every_option_set_round_trips(algorithm, encoding, prefix, timestamp_header):
    verifier = HmacVerifier(
        [SECRET],
        header="X-Signature",
        algorithm=algorithm,
        encoding=encoding,
        prefix=prefix,
        timestamp_header=timestamp_header,
    )
    timestamp = NOW if timestamp_header else None
    signature = sign_hmac(
        SECRET, BODY, algorithm=algorithm, encoding=encoding, prefix=prefix, timestamp=timestamp
    )
    sent = {"x-signature": signature} | ({"x-timestamp": str(NOW)} if timestamp_header else {})
    delivery = verifier.verify(BODY, sent, NOW)
    assert delivery.timestamp == timestamp
    tampered = BODY.replace(b"paid", b"pain")
    with pytest.raises(SignatureRejected):
        verifier.verify(tampered, sent, NOW)


def test_signatures_match_an_independent_hmac():
    digest = hmac.new(SECRET, b"42." + BODY, hashlib.sha512).digest()
    assert sign_hmac(SECRET, BODY, algorithm="sha512", encoding="base64", timestamp=42) == (
        base64.b64encode(digest).decode()
    )
    assert sign_hmac(SECRET, BODY, algorithm="sha1", prefix="sha1=") == (
        "sha1=" + hmac.new(SECRET, BODY, hashlib.sha1).hexdigest()
    )


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-301, False), (-300, True), (0, True), (300, True), (301, False)]
)
def test_a_timestamp_header_gives_a_window_of_plus_or_minus_the_tolerance(offset, accepted):
    verifier = HmacVerifier([SECRET], header="x-signature", timestamp_header="x-timestamp")
    sent = {
        "x-signature": sign_hmac(SECRET, BODY, timestamp=NOW + offset),
        "x-timestamp": str(NOW + offset),
    }
    if accepted:
        assert verifier.verify(BODY, sent, NOW).timestamp == NOW + offset
    else:
        with pytest.raises(TimestampRejected):
            verifier.verify(BODY, sent, NOW)


@pytest.mark.parametrize("timestamp", ["", "soon", "12.5", "-1", "\u0661\u0662"])
def test_a_garbage_or_missing_timestamp_is_malformed(timestamp: str):
    verifier = HmacVerifier([SECRET], header="x-signature", timestamp_header="x-timestamp")
    sent = {"x-signature": sign_hmac(SECRET, BODY, timestamp=NOW), "x-timestamp": timestamp}
    with pytest.raises(MalformedWebhook, match="x-timestamp"):
        verifier.verify(BODY, sent, NOW)


def test_the_signed_timestamp_cannot_be_swapped():
    verifier = HmacVerifier([SECRET], header="x-signature", timestamp_header="x-timestamp")
    sent = {"x-signature": sign_hmac(SECRET, BODY, timestamp=NOW - 3600), "x-timestamp": str(NOW)}
    with pytest.raises(SignatureRejected):
        verifier.verify(BODY, sent, NOW)


def test_without_an_id_header_the_body_hash_is_the_id_so_a_redelivery_dedups():
    verifier = HmacVerifier([SECRET], header="x-signature", timestamp_header="x-timestamp")
    ids = set()
    for moment in (NOW, NOW + 60):
        sent = {
            "x-signature": sign_hmac(SECRET, BODY, timestamp=moment),
            "x-timestamp": str(moment),
        }
        ids.add(verifier.verify(BODY, sent, moment).delivery_id)
    assert ids == {"sha256:" + hashlib.sha256(BODY).hexdigest()}


def test_id_and_event_headers_fill_the_delivery_and_are_required_once_configured():
    verifier = HmacVerifier(
        [SECRET], header="x-signature", id_header="X-Request-Id", event_header="X-Event"
    )
    sent = {
        "x-signature": sign_hmac(SECRET, BODY),
        "x-request-id": "req-1",
        "x-event": "order.created",
    }
    assert verifier.verify(BODY, sent, NOW) == Delivery("req-1", "order.created", None)
    for missing in ("x-request-id", "x-event"):
        with pytest.raises(MalformedWebhook, match=missing):
            verifier.verify(BODY, {k: v for k, v in sent.items() if k != missing}, NOW)


def test_rotation_accepts_any_configured_secret():
    old, new = b"old", b"new"
    for secret in (old, new):
        HmacVerifier([old, new], header="x-signature").verify(
            BODY, {"x-signature": sign_hmac(secret, BODY)}, NOW
        )
    with pytest.raises(SignatureRejected):
        HmacVerifier([new], header="x-signature").verify(
            BODY, {"x-signature": sign_hmac(old, BODY)}, NOW
        )


@pytest.mark.parametrize(
    ("options", "signature", "problem"),
    [
        ({"prefix": "sha256="}, "sha1=abcd", "does not start with 'sha256='"),
        ({}, "not hex at all", "not a hexadecimal"),
        ({"encoding": "base64"}, "###", "not a base64"),
        ({"encoding": "base64"}, "abc", "not a base64"),
    ],
)
def test_an_unparseable_signature_is_malformed(options, signature, problem):
    verifier = HmacVerifier([SECRET], header="x-signature", **options)
    with pytest.raises(MalformedWebhook, match=problem):
        verifier.verify(BODY, {"x-signature": signature}, NOW)
