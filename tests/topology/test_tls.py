"""TLS settings: what is refused before connecting, and the contexts built from them."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest
from fastapi import FastAPI

from producers.api.guards import server_config
from tests.tlsbroker import Certificates, make_certificates
from topology.errors import SettingsError
from topology.settings import ApiSettings, BrokerSettings, load_settings, read_section
from topology.tls import api_context, broker_context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"TASKQ_BROKER_TLS_KEY_FILE": "k.pem", "TASKQ_AMQP_URL": "amqps://h/"},
            "TASKQ_BROKER_TLS_KEY_FILE needs TASKQ_BROKER_TLS_CERT_FILE",
        ),
        (
            {"TASKQ_BROKER_SASL_EXTERNAL": "true", "TASKQ_AMQP_URL": "amqps://h/"},
            "TASKQ_BROKER_SASL_EXTERNAL needs an amqps:// TASKQ_AMQP_URL and a client certificate",
        ),
        (
            {"TASKQ_BROKER_SASL_EXTERNAL": "true", "TASKQ_BROKER_TLS_CERT_FILE": "c.pem"},
            "TASKQ_BROKER_SASL_EXTERNAL needs an amqps:// TASKQ_AMQP_URL",
        ),
        (
            {"TASKQ_BROKER_TLS_CA_FILE": "ca.pem"},
            "TASKQ_BROKER_TLS_* files are set but the broker is reached over plain amqp://",
        ),
        (
            {"TASKQ_API_TLS_CLIENT_CA_FILE": "ca.pem"},
            "TASKQ_API_TLS_KEY_FILE and TASKQ_API_TLS_CLIENT_CA_FILE need TASKQ_API_TLS_CERT_FILE",
        ),
    ],
)
def test_incomplete_tls_settings_are_refused_by_name(env: dict[str, str], problem: str):
    with pytest.raises(SettingsError, match=f"^invalid settings:\n  {re.escape(problem)}"):
        load_settings(env)


def test_the_ca_alone_serves_an_https_management_api_beside_plain_amqp(certs: Certificates):
    settings = read_section(
        BrokerSettings,
        {"TASKQ_MANAGEMENT_URL": "https://mq:15671", "TASKQ_BROKER_TLS_CA_FILE": str(certs.ca)},
    )
    assert not settings.amqps
    assert broker_context(settings).verify_mode == ssl.CERT_REQUIRED


def test_the_broker_context_verifies_the_broker_and_shows_the_client_certificate(
    certs: Certificates,
):
    settings = _broker(certs, cert=str(certs.client), key=str(certs.client_key))
    context = broker_context(settings)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # Only the CA named: the system's CAs are not trusted besides it.
    assert [c["subject"] for c in context.get_ca_certs()] == [_subject(certs.ca)]


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"ca": "missing.pem"}, "TASKQ_BROKER_TLS_CA_FILE: cannot load missing.pem"),
        ({"cert": "missing.pem"}, "TASKQ_BROKER_TLS_CERT_FILE/TASKQ_BROKER_TLS_KEY_FILE"),
        # A key that is not the certificate's.
        ({"key": "stranger_key"}, "TASKQ_BROKER_TLS_CERT_FILE/TASKQ_BROKER_TLS_KEY_FILE"),
    ],
)
def test_unusable_broker_tls_files_are_named(
    certs: Certificates, files: dict[str, str], problem: str
):
    chosen = {"ca": str(certs.ca), "cert": str(certs.client), "key": str(certs.client_key)}
    chosen |= {k: str(getattr(certs, v, v)) for k, v in files.items()}
    with pytest.raises(SettingsError, match=re.escape(problem)):
        broker_context(_broker(certs, **chosen))


def test_the_api_serves_plain_http_unless_given_a_certificate(certs: Certificates):
    assert api_context(ApiSettings()) is None
    assert server_config(FastAPI(), ApiSettings()).is_ssl is False
    served = ApiSettings(
        api_tls_cert_file=str(certs.server), api_tls_key_file=str(certs.server_key)
    )
    context = api_context(served)
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE  # no client certificate asked for
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # Python's cipher list, not uvicorn's "TLSv1": forward secrecy, no SHA-1 MACs.
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12
    assert all(n.startswith(("ECDHE-", "DHE-")) and not n.endswith("-SHA") for n in tls12)
    assert server_config(FastAPI(), served).is_ssl


def test_a_client_ca_makes_the_api_require_client_certificates(certs: Certificates):
    settings = ApiSettings(
        api_tls_cert_file=str(certs.server),
        api_tls_key_file=str(certs.server_key),
        api_tls_client_ca_file=str(certs.ca),
    )
    context = api_context(settings)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [_subject(certs.ca)]


def test_a_bad_api_certificate_stops_the_server_before_it_starts(certs: Certificates):
    settings = ApiSettings(
        api_tls_cert_file=str(certs.server), api_tls_key_file=str(certs.client_key)
    )
    with pytest.raises(SettingsError, match="TASKQ_API_TLS_CERT_FILE/TASKQ_API_TLS_KEY_FILE"):
        server_config(FastAPI(), settings)
    missing = ApiSettings(
        api_tls_cert_file=str(certs.server),
        api_tls_key_file=str(certs.server_key),
        api_tls_client_ca_file="missing.pem",
    )
    with pytest.raises(SettingsError, match="TASKQ_API_TLS_CLIENT_CA_FILE: cannot load"):
        server_config(FastAPI(), missing)


def _broker(certs: Certificates, *, ca: str = "", cert: str = "", key: str = "") -> BrokerSettings:
    return read_section(
        BrokerSettings,
        {
            "TASKQ_AMQP_URL": "amqps://mq/",
            "TASKQ_BROKER_TLS_CA_FILE": ca or str(certs.ca),
            "TASKQ_BROKER_TLS_CERT_FILE": cert,
            "TASKQ_BROKER_TLS_KEY_FILE": key,
        },
    )


def _subject(pem: Path) -> tuple[tuple[tuple[str, str], ...], ...]:
    context = ssl.create_default_context(cafile=str(pem))
    (only,) = context.get_ca_certs()
    return only["subject"]  # type: ignore[return-value]
