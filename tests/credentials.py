"""API keys for tests: every app now needs a credential, so tests make one the real way."""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.testclient import TestClient

from jobstore.model import CredentialStore
from producers.auth.api_keys import NewKey, make_key
from producers.auth.principal import Scope

EVERY_SCOPE = tuple(Scope)


def new_key(
    *,
    tenant: str = "default",
    scopes: tuple[Scope, ...] = EVERY_SCOPE,
    job_types: tuple[str, ...] | None = None,
    name: str = "test",
) -> NewKey:
    """Return a fresh key (not yet stored)."""
    return make_key(name=name, tenant=tenant, scopes=scopes, job_types=job_types)


async def issue_key(
    store: CredentialStore,
    *,
    tenant: str = "default",
    scopes: tuple[Scope, ...] = EVERY_SCOPE,
    job_types: tuple[str, ...] | None = None,
    name: str = "test",
) -> str:
    """Store a fresh key in ``store`` and return its text."""
    key = new_key(tenant=tenant, scopes=scopes, job_types=job_types, name=name)
    await store.create_api_key(key.record)
    return key.token


def bearer(token: str) -> dict[str, str]:
    """Return the header that presents ``token``."""
    return {"Authorization": f"Bearer {token}"}


def authorize(client: TestClient, **key: Any) -> str:
    """Issue a key in a running TestClient's app store and make the client send it; return it."""
    store = client.app.state.services.submitter.store  # type: ignore[attr-defined]
    token: str = client.portal.call(partial(issue_key, store, **key))  # type: ignore[union-attr]
    client.headers.update(bearer(token))
    return token
