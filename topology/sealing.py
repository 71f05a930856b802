"""Payload encryption at rest: AES-256-GCM under named data keys, bound to the job id."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from topology.errors import ContractError, SettingsError

SEALED: Final = "$sealed"
"""The one key of a stored JSON value that holds a sealed payload or result: ``{"$sealed": token}``."""
SEALED_CONTENT_TYPE: Final = "application/vnd.taskq.sealed"
"""The content type of a claim-checked payload stored sealed."""

KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_NONCE: Final = 12
_KEY_BYTES: Final = 32


class Sealer:
    """Seals with the current data key, opens with any listed one; without keys it leaves data clear."""

    def __init__(self, keys: Iterable[tuple[str, bytes]] = ()) -> None:
        self._keys: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if key_id in self._keys:  # parse_keys checked each id and key
                raise SettingsError(f"data key id {key_id!r} is listed twice")
            self._keys[key_id] = AESGCM(key)
        self.current: str | None = next(iter(self._keys), None)
        """The id of the key that seals (the first listed), or None: encryption is off."""

    @property
    def enabled(self) -> bool:
        """Return whether new data is sealed."""
        return self.current is not None

    def seal(self, job_id: str, data: bytes, what: str = "payload") -> str:
        """Return ``data`` sealed for ``job_id`` under the current key (ValueError if encryption is off)."""
        if self.current is None:
            raise ValueError("no data key is configured")
        nonce = os.urandom(_NONCE)
        sealed = self._keys[self.current].encrypt(nonce, data, _aad(job_id, what))
        return f"{self.current}:{binascii.b2a_base64(nonce + sealed, newline=False).decode()}"

    def open(self, job_id: str, token: str, what: str = "payload") -> bytes:
        """Return the bytes ``token`` seals for ``job_id``; ContractError if they cannot be opened."""
        key_id, _, text = token.partition(":")
        aead = self._keys.get(key_id)
        if aead is None:
            known = ", ".join(self._keys) or "none: TASKQ_DATA_KEYS is not set"
            raise ContractError(
                f"the {what} of job {job_id} is sealed under data key {key_id[:32]!r}, "
                f"which this process does not hold (keys: {known})"
            )
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
            if len(raw) < _NONCE + 16:
                raise ValueError("too short")
            return aead.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(job_id, what))
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise ContractError(
                f"the {what} of job {job_id} does not open under data key {key_id!r}: "
                "it was altered, or belongs to another job"
            ) from exc

    def seal_value(self, job_id: str, data: bytes, what: str = "payload") -> dict[str, Any]:
        """Return the stored JSON form of ``data`` sealed: ``{"$sealed": token}``."""
        return {SEALED: self.seal(job_id, data, what)}


def token_of(value: object) -> str | None:
    """Return the token of a stored sealed value, or None when ``value`` is stored clear."""
    if isinstance(value, dict) and len(value) == 1:
        token = value.get(SEALED)
        if isinstance(token, str):
            return token
    return None


def parse_keys(text: str, source: str) -> list[tuple[str, bytes]]:
    """Return the ``id:base64key`` entries of ``text`` (comma- or line-separated), the first current."""
    keys = []
    for entry in re.split(r"[,\n]", text):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, encoded = entry.partition(":")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            key = b""
        if not sep or len(key) != _KEY_BYTES or not KEY_ID.fullmatch(key_id.strip()):
            raise SettingsError(
                f"{source}: each entry is id:base64key (a 32-byte key; id of letters, digits, "
                f"- or _), e.g. k2:{base64.b64encode(bytes(32)).decode()}"
            )
        keys.append((key_id.strip(), key))
    return keys


def new_key() -> str:
    """Return a fresh random 32-byte data key, base64-encoded."""
    return base64.b64encode(os.urandom(_KEY_BYTES)).decode()


def sealer_from(keys: str | None, keys_file: str | None) -> Sealer:
    """Return the sealer the ``TASKQ_DATA_KEYS`` / ``TASKQ_DATA_KEYS_FILE`` values describe."""
    if keys_file:
        try:
            text = Path(keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"TASKQ_DATA_KEYS_FILE: cannot read {keys_file}: {exc}") from exc
        return Sealer(parse_keys(text, "TASKQ_DATA_KEYS_FILE"))
    return Sealer(parse_keys(keys or "", "TASKQ_DATA_KEYS"))


def _aad(job_id: str, what: str) -> bytes:
    # A token copied to another job, or from a payload to a result, does not open.
    return f"taskq/{what}/{job_id}".encode()
