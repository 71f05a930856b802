"""TLS contexts from the settings: the broker client's (AMQP and management API) and the HTTP API server's."""

from __future__ import annotations

import ssl

from topology.errors import SettingsError
from topology.settings import ApiSettings, BrokerSettings


def broker_context(settings: BrokerSettings) -> ssl.SSLContext:
    """Return a context that verifies the broker's certificate and name, showing the client certificate if one is set."""
    ca_file = settings.broker_tls_ca_file
    try:
        # Hostname checks, CERT_REQUIRED and TLS 1.2 at least: Python's defaults for a client.
        context = ssl.create_default_context(cafile=ca_file or None)
    except OSError as exc:  # ssl.SSLError too: a file that is not PEM
        raise SettingsError(f"TASKQ_BROKER_TLS_CA_FILE: cannot load {ca_file}: {exc}") from exc
    if settings.broker_tls_cert_file:
        _load_chain(context, settings.broker_tls_cert_file, settings.broker_tls_key_file, "BROKER")
    return context


def api_context(settings: ApiSettings) -> ssl.SSLContext | None:
    """Return the HTTP API's server context (None: plain HTTP), requiring client certificates if a client CA is set."""
    if not settings.api_tls_cert_file:
        return None
    # TLS 1.2 at least and Python's forward-secret ciphers without SHA-1 (uvicorn's default is "TLSv1").
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_chain(context, settings.api_tls_cert_file, settings.api_tls_key_file, "API")
    if ca_file := settings.api_tls_client_ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except OSError as exc:
            raise SettingsError(
                f"TASKQ_API_TLS_CLIENT_CA_FILE: cannot load {ca_file}: {exc}"
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_failure(exc: BaseException) -> bool:
    """Return whether ``exc`` is a failed TLS handshake (client libraries keep only its text)."""
    return isinstance(exc, ssl.SSLError) or "SSL" in str(exc)


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str, side: str) -> None:
    try:
        context.load_cert_chain(cert_file, key_file or None)
    except OSError as exc:  # ssl.SSLError too: not PEM, or a key that does not match
        key = f" with {key_file}" if key_file else ""
        raise SettingsError(
            f"TASKQ_{side}_TLS_CERT_FILE/TASKQ_{side}_TLS_KEY_FILE: cannot load "
            f"{cert_file}{key}: {exc}"
        ) from exc
