"""TLS keeps the URL's name while the connection goes to the pinned address."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

# cryptography comes with the dev extra (moto needs it; constraints.txt pins it).
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.webhooks.conftest import Receiver, StubDns, start_receiver
from topology.errors import DeliveryFailed
from webhooks.outbound.addresses import AllowList
from webhooks.outbound.client import open_session, post

LOOPBACK = AllowList.parse("127.0.0.1")


def _certificate(subject: str, issuer: Any, key: Any, signer: Any, *, ca: bool, names: list[str]):
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Return (server context for pinned.test, client context trusting only the test CA)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "taskq test CA")])
    ca = _certificate("taskq test CA", ca_name, ca_key, ca_key, ca=True, names=[])
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("pinned.test", ca_name, key, ca_key, ca=False, names=["pinned.test"])
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


@pytest.fixture
async def tls_receiver(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> AsyncIterator[Receiver]:
    state = Receiver()
    server = await start_receiver(state, ssl=tls[0])
    yield state
    state.release.set()
    await server.close()


async def test_https_to_a_pinned_name_verifies_the_certificate_for_that_name(
    tls_receiver: Receiver,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    dns: StubDns,
    dials: list[tuple[Any, ...]],
):
    dns.answer("pinned.test", ["127.0.0.1"], ["169.254.169.254"])
    url = f"https://pinned.test:{tls_receiver.port}/hook"
    async with open_session(LOOPBACK, ssl=tls[1]) as session:
        response = await post(url, b"{}", {}, session=session, timeout=5)
    assert response.status == 200
    assert dials == [("127.0.0.1", tls_receiver.port)]
    assert tls_receiver.seen[0].headers["Host"] == f"pinned.test:{tls_receiver.port}"


async def test_https_to_the_bare_address_fails_certificate_verification(
    tls_receiver: Receiver, tls: tuple[ssl.SSLContext, ssl.SSLContext]
):
    url = f"https://127.0.0.1:{tls_receiver.port}/hook"
    async with open_session(LOOPBACK, ssl=tls[1]) as session:
        with pytest.raises(DeliveryFailed, match="Certificate"):
            await post(url, b"{}", {}, session=session, timeout=5)
    assert tls_receiver.seen == []
