"""W1 for every scheme: the sender's bytes verify, any change to them or to the key does not."""

import pytest

from tests.webhooks.cases import BODY, CASE_IDS, CASES, NOW, RESERIALISED, Case
from topology.errors import MalformedWebhook, SignatureRejected
from webhooks.schemes.base import Delivery

pytestmark = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)


def test_a_signed_delivery_round_trips(case: Case):
    delivery = case.make().verify(BODY, case.sign(BODY, NOW), NOW)
    assert isinstance(delivery, Delivery)
    assert delivery.delivery_id


def test_one_flipped_body_byte_is_rejected(case: Case):
    headers = case.sign(BODY, NOW)
    for index in (0, len(BODY) // 2, len(BODY) - 1):
        tampered = bytearray(BODY)
        tampered[index] ^= 0x01
        with pytest.raises(SignatureRejected):
            case.make().verify(bytes(tampered), headers, NOW)


def test_a_re_serialised_body_is_rejected(case: Case):
    with pytest.raises(SignatureRejected):
        case.make().verify(RESERIALISED, case.sign(BODY, NOW), NOW)


def test_another_endpoints_secret_is_rejected(case: Case):
    with pytest.raises(SignatureRejected):
        case.make().verify(BODY, case.sign_with_other_secret(BODY, NOW), NOW)


@pytest.mark.parametrize("value", [None, ""])
def test_a_missing_or_empty_signature_header_is_rejected(case: Case, value: str | None):
    headers = case.sign(BODY, NOW)
    if value is None:
        del headers[case.signature_header]
    else:
        headers[case.signature_header] = value
    with pytest.raises(SignatureRejected, match="missing"):
        case.make().verify(BODY, headers, NOW)


def test_an_empty_signed_body_verifies_unless_the_scheme_needs_json(case: Case):
    verifier, headers = case.make(), case.sign(b"", NOW)
    if case.name == "stripe":
        with pytest.raises(MalformedWebhook, match="not JSON"):
            verifier.verify(b"", headers, NOW)
    else:
        assert verifier.verify(b"", headers, NOW).delivery_id
