"""Inbound signature schemes: one verifier and its signing helpers per sender family."""

from webhooks.schemes.base import MAX_SIGNATURES, Delivery, Verifier
from webhooks.schemes.github import GithubVerifier, sign_github
from webhooks.schemes.hmac_header import HmacVerifier, sign_hmac
from webhooks.schemes.standard import StandardVerifier, sign_standard, sign_standard_ed25519
from webhooks.schemes.standard_keys import generate_standard_keypair, generate_standard_secret
from webhooks.schemes.stripe import StripeVerifier, sign_stripe

__all__ = [
    "MAX_SIGNATURES",
    "Delivery",
    "GithubVerifier",
    "HmacVerifier",
    "StandardVerifier",
    "StripeVerifier",
    "Verifier",
    "generate_standard_keypair",
    "generate_standard_secret",
    "sign_github",
    "sign_hmac",
    "sign_standard",
    "sign_standard_ed25519",
    "sign_stripe",
]
