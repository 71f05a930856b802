"""``InMemoryBlobStore``: the blob store port in a dict, verified like the real ones."""

from __future__ import annotations

from datetime import UTC, datetime

from jobstore.blobs import PAYLOADS, StoredBlob, check_key, make_ref, verify
from topology.envelope import PayloadRef
from topology.errors import BlobStoreError, TaskqError


class InMemoryBlobStore:
    """Keeps blobs in a dict keyed by uri, verified like the real stores: for unit tests."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.written: dict[str, datetime] = {}  # by uri: when each blob was put
        self.fail_with: TaskqError | None = None

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Keep ``data`` under ``memory:///<key>`` and return its reference."""
        self._maybe_fail()
        ref = make_ref(f"memory:///{check_key(key)}", data, content_type)
        self.blobs[ref.uri] = data
        self.written[ref.uri] = datetime.now(UTC)
        return ref

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the verified bytes kept under ``ref.uri`` (see ``BlobStore.get``)."""
        self._maybe_fail()
        data = self.blobs.get(ref.uri)
        if data is None:
            raise BlobStoreError(f"no blob at {ref.uri}")
        return verify(ref, data)

    async def delete(self, uri: str) -> None:
        """Forget the blob under ``uri``, if there is one."""
        self._maybe_fail()
        self.blobs.pop(uri, None)

    async def scan(self, *, after: str, limit: int) -> list[StoredBlob]:
        """Return up to ``limit`` payload blobs whose keys sort after ``after``, in key order."""
        self._maybe_fail()
        keys = sorted(uri.removeprefix("memory:///") for uri in self.blobs)
        chosen = [k for k in keys if k > after and k.startswith(f"{PAYLOADS}/")][:limit]
        return [StoredBlob(k, f"memory:///{k}", self.written[f"memory:///{k}"]) for k in chosen]

    async def ping(self) -> None:
        """Return at once unless ``fail_with`` is set: memory is always there."""
        self._maybe_fail()

    async def close(self) -> None:
        """Do nothing: there is nothing to release."""

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
