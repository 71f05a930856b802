import binascii
import hmac

import pytest

from tests.webhooks.cases import BODY, CASE_IDS, CASES, NOW, Case
from tests.webhooks.signing import generate_standard_keypair, sign_standard_ed25519
from topology import errors
from topology.errors import MalformedWebhook, SignatureRejected, TaskqError, WebhookConfigError
from webhooks.schemes import standard
from webhooks.schemes.base import foreign_errors
from webhooks.schemes.hmac_header import StripeVerifier
from webhooks.schemes.standard import StandardVerifier, sign_standard


def test_every_webhook_error_is_a_webhook_error():
    for cls in (SignatureRejected, errors.TimestampRejected, MalformedWebhook, WebhookConfigError):
        assert issubclass(cls, errors.WebhookError)
        assert issubclass(cls, TaskqError)


@pytest.mark.parametrize(
    "build",
    [
        lambda: StripeVerifier([b"whsec_x"], tolerance=0),
        lambda: StripeVerifier([b"whsec_x"], tolerance=True),
        lambda: StandardVerifier("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        lambda: StandardVerifier(["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]),
        lambda: StandardVerifier(["whsec_not base64!"]),
        lambda: StandardVerifier(["whsec_"]),
        lambda: StandardVerifier(["whpk_AAAA"]),
        lambda: StandardVerifier([generate_standard_keypair()[0]]),
        lambda: StandardVerifier(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], tolerance=-1),
        lambda: sign_standard(generate_standard_keypair()[0], "m", 1, b""),
        lambda: sign_standard_ed25519("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "m", 1, b""),
        lambda: sign_standard_ed25519("whsk_" + "A" * 44, "m", 1, b""),
    ],
)
def test_unusable_secrets_and_options_fail_when_the_verifier_is_built(build):
    with pytest.raises(WebhookConfigError):
        build()


def test_config_errors_never_echo_the_secret():
    secret = "whsec_not base64 but secret!"
    with pytest.raises(WebhookConfigError) as raised:
        StandardVerifier([secret])
    assert "secret!" not in str(raised.value)


@pytest.mark.parametrize(
    "foreign",
    [
        ValueError("bad"),
        binascii.Error("Incorrect padding"),
        UnicodeDecodeError("ascii", b"\xff", 0, 1, "no"),
    ],
)
def test_the_seam_turns_decoding_errors_into_malformed_webhooks(foreign: Exception):
    expected = pytest.raises(MalformedWebhook, match="the Example delivery cannot be decoded")
    with expected as raised, foreign_errors("Example"):
        raise foreign
    assert raised.value.__cause__ is foreign


def test_the_seam_lets_webhook_errors_and_bugs_through_unchanged():
    with pytest.raises(SignatureRejected), foreign_errors("Example"):
        raise SignatureRejected("no match")
    # A TypeError is a bug in taskq, not a bad delivery: it must stay loud.
    with pytest.raises(TypeError), foreign_errors("Example"):
        raise TypeError("bug")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_scheme_verifies_inside_the_seam(case: Case, monkeypatch: pytest.MonkeyPatch):
    verifier, headers = case.make(), case.sign(BODY, NOW)

    def failing(*args: object) -> bool:
        raise binascii.Error("simulated decoding failure")

    # Break the primitive each scheme's check relies on, after the delivery was signed.
    monkeypatch.setattr(hmac, "digest", failing)
    monkeypatch.setattr(standard, "_ed25519_valid", failing)
    with pytest.raises(MalformedWebhook, match="cannot be decoded"):
        verifier.verify(BODY, headers, NOW)
