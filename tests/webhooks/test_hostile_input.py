"""W4: whatever arrives in the headers or body, a verifier raises a WebhookError and nothing else."""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webhooks.cases import BODY, CASE_IDS, CASES, NOW, Case
from topology.errors import MalformedWebhook, TimestampRejected, WebhookError
from webhooks.schemes.base import MAX_SIGNATURES
from webhooks.schemes.hmac_header import StripeVerifier, github_verifier
from webhooks.schemes.standard import StandardVerifier

HEADER_NAMES = sorted(
    {name for case in CASES for name in case.sign(BODY, NOW)} | {"x-request-id", "x-event"}
)
b64ish = st.text(alphabet="ABCDEFabcdef0123456789+/=_-.,; \t", max_size=96)
entries = st.tuples(
    st.sampled_from(["v1", "v1a", "v0", "v2", "t", "sha256", ""]),
    st.sampled_from([",", "=", ""]),
    b64ish,
).map("".join)
hostile_values = st.one_of(
    st.text(max_size=80),
    st.text(
        alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x2FF), min_size=1, max_size=8
    ),
    st.from_regex(r"[0-9+\- .e_]{0,20}", fullmatch=True),
    st.lists(entries, max_size=14).map(" ".join),
    st.lists(entries, max_size=14).map(",".join),
    st.sampled_from(["", " ", ",", "=", "v1,", "t=", "sha256=", "\x00", "v1a,===="]),
)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), body=st.binary(max_size=200))
def test_random_headers_and_bodies_raise_only_webhook_errors(
    case: Case, data: st.DataObject, body: bytes
):
    # Start from a correctly signed delivery so most of the parser is reached, then spoil headers.
    headers = case.sign(BODY, NOW)
    spoiled = data.draw(st.dictionaries(st.sampled_from(HEADER_NAMES), hostile_values, min_size=1))
    headers.update(spoiled)
    with pytest.raises(WebhookError):
        case.make().verify(body, headers, NOW)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=300), offset=st.integers(-(10**6), 10**6))
def test_correctly_signed_random_bodies_verify_unless_stale_or_not_a_stripe_event(
    case: Case, body: bytes, offset: int
):
    try:
        delivery = case.make().verify(body, case.sign(body, NOW + offset), NOW)
    except TimestampRejected:
        assert abs(offset) > 300
    except MalformedWebhook:
        assert case.name == "stripe"  # the only scheme whose body must be a JSON event
    else:
        assert delivery.delivery_id


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize(
    "value", ["v1,\u00e9t\u00e9", "sha256=\u2603", "t=\u0661\u0662,v1=ab", "\udcff"]
)
def test_a_non_ascii_signature_header_is_malformed(case: Case, value: str):
    headers = case.sign(BODY, NOW) | {case.signature_header: value}
    with pytest.raises(MalformedWebhook, match="non-ASCII"):
        case.make().verify(BODY, headers, NOW)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_huge_header_is_refused_without_being_parsed(case: Case):
    headers = case.sign(BODY, NOW) | {case.signature_header: "v1," + "A" * 1_000_000}
    started = time.perf_counter()
    with pytest.raises(MalformedWebhook, match="characters long"):
        case.make().verify(BODY, headers, NOW)
    assert time.perf_counter() - started < 0.05


SIGNATURE = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
TEN_THOUSAND = [
    (
        "standard",
        StandardVerifier(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
        {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(NOW),
            "webhook-signature": " ".join([f"v1,{SIGNATURE}"] * 10_000),
        },
    ),
    (
        "stripe",
        StripeVerifier([b"whsec_x"]),
        {
            "stripe-signature": f"t={NOW}," + ",".join(["v1=" + "ab" * 32] * 10_000),
        },
    ),
    (
        "github",
        github_verifier([b"secret"]),
        {
            "x-hub-signature-256": " ".join(["sha256=" + "ab" * 32] * 10_000),
            "x-github-delivery": "d",
            "x-github-event": "push",
        },
    ),
]


@pytest.mark.parametrize(
    ("verifier", "headers"),
    [(v, h) for _, v, h in TEN_THOUSAND],
    ids=[n for n, _, _ in TEN_THOUSAND],
)
def test_ten_thousand_signatures_are_refused_quickly(verifier, headers):
    started = time.perf_counter()
    for _ in range(100):
        with pytest.raises(MalformedWebhook):
            verifier.verify(BODY, headers, NOW)
    assert (time.perf_counter() - started) / 100 < 0.005


def test_the_signature_cap_stays_small_enough_to_bound_ed25519_work():
    # Each v1a entry may cost one ed25519 verification per public key (about 50 µs each).
    assert MAX_SIGNATURES <= 10


def test_a_list_that_fits_the_length_limit_but_not_the_count_is_refused_before_decoding():
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(NOW),
        "webhook-signature": " ".join(["v1a,AAAA"] * (MAX_SIGNATURES + 1)),
    }
    with pytest.raises(MalformedWebhook, match=f"{MAX_SIGNATURES + 1} signatures"):
        StandardVerifier(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).verify(BODY, headers, NOW)
