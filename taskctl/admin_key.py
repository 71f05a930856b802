"""The admin key of a local install (``<TASKQ_DATA_DIR>/admin.key``, 0600): made by ``taskctl up``, sent by ``taskctl``."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger

from jobstore.model import CredentialStore
from producers.auth.api_keys import make_key, parse
from producers.auth.principal import Scope
from topology.names import DEFAULT_TENANT
from topology.settings import AuthSettings, ClientSettings, LocationSettings, read_section

FILE_NAME = "admin.key"
KEY_NAME = "admin (taskctl up)"


def key_path(locations: LocationSettings | None = None) -> Path:
    """Return the path of the admin key file."""
    return Path((locations or read_section(LocationSettings)).data_dir) / FILE_NAME


def caller_key() -> str | None:
    """Return the API key ``taskctl`` sends: ``TASKQ_API_KEY``, else the admin key file's."""
    client = read_section(ClientSettings)
    if client.api_key is not None:
        return client.api_key.get_secret_value()
    try:
        return key_path().read_text(encoding="ascii").strip() or None
    except OSError:
        return None


async def ensure_admin_key(store: CredentialStore, path: Path, auth: AuthSettings) -> bool:
    """Make an admin key in ``path`` (0600) unless it holds one the store knows; return whether one was made."""
    # A revoked or expired key is kept, with a warning: revoking it was someone's decision.
    now = datetime.now(UTC)
    existing = _read(path)
    if existing is not None:
        record = await store.get_api_key(existing)
        if record is not None:
            if not record.usable(now):
                logger.warning(
                    "the admin API key in {} is revoked or expired; delete the file and run "
                    "taskctl up again for a new one",
                    path,
                )
            return False
    pepper = auth.api_key_pepper
    new = make_key(
        name=KEY_NAME, tenant=DEFAULT_TENANT, scopes=tuple(Scope), pepper=pepper, now=now
    )
    await store.create_api_key(new.record)
    _write_private(path, new.token)
    logger.info(
        "admin API key (every scope, tenant {}) written to {} (mode 0600); taskctl uses it, and "
        'curl takes -H "Authorization: Bearer $(cat {})"',
        *(DEFAULT_TENANT, path, path),
    )
    return True


def _read(path: Path) -> str | None:
    """Return the id of the key in ``path``, or ``None`` when there is no readable key."""
    try:
        parsed = parse(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError):
        return None
    return None if parsed is None else parsed[0]


def _write_private(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` so that only its owner can ever read it (no window at 0644)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, and if the file was left over
        os.write(fd, f"{token}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(partial, path)
