"""The blob store port and what every store shares: key rules and payload verification."""

from __future__ import annotations

import hashlib
import re
from typing import Final, Protocol

from topology.envelope import PayloadRef
from topology.errors import BlobIntegrityError, BlobStoreError

# Segments may not start with "." (no "..", and no clash with the stores' ".tmp-" files).
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_KEY_MAX: Final = 900  # S3 allows 1024 bytes; leave room for the prefix
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class BlobStore(Protocol):
    """Where claim-checked payloads are kept: put, get (verified), delete and a health probe."""

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Store ``data`` under ``key`` and return a reference holding its uri, sha256 and size."""
        ...

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the bytes ``ref`` points to.

        Raises:
            BlobIntegrityError: when their size or sha256 differs from the reference.
            BlobStoreError: when there is no such blob or the reference is not this store's.
        """
        ...

    async def delete(self, ref: PayloadRef) -> None:
        """Remove the blob ``ref`` points to; a missing blob is not an error."""
        ...

    async def ping(self) -> None:
        """Return when the store is usable, or raise ``BlobStoreError`` saying why not."""
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def blob_key(job_id: str) -> str:
    """Return the storage key of a job's payload, fanned out over 256 prefixes.

    Raises:
        ValueError: when ``job_id`` is not a plain id (letters, digits, ``-`` and ``_``).
    """
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} is not a plain id; refusing to build a key from it")
    # Not job_id[:2]: the leading characters of a UUIDv7 are its timestamp, the same for years.
    fan = hashlib.sha256(job_id.encode()).hexdigest()[:2]
    return f"payloads/{fan}/{job_id}"


def _check_key(key: str) -> str:
    if len(key) > _KEY_MAX or not _KEY.fullmatch(key):
        raise BlobStoreError(f"blob key {key!r} is not a plain relative path; refusing it")
    return key


def _make_ref(uri: str, data: bytes, content_type: str) -> PayloadRef:
    digest = hashlib.sha256(data).hexdigest()
    return PayloadRef(uri=uri, sha256=digest, size=len(data), content_type=content_type)


def _check_size(ref: PayloadRef, size: int) -> None:
    if size != ref.size:
        raise BlobIntegrityError(
            f"blob {ref.uri} holds {size} bytes; its reference says {ref.size}"
        )


def _verify(ref: PayloadRef, data: bytes) -> bytes:
    _check_size(ref, len(data))
    digest = hashlib.sha256(data).hexdigest()
    if digest != ref.sha256:
        raise BlobIntegrityError(
            f"blob {ref.uri} has sha256 {digest}; its reference says {ref.sha256}"
        )
    return data
