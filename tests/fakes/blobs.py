"""``InMemoryBlobStore``: the blob store port in a dict, verified like the real ones."""

from __future__ import annotations

from jobstore.blobs import check_key, make_ref, verify
from topology.envelope import PayloadRef
from topology.errors import BlobStoreError, TaskqError


class InMemoryBlobStore:
    """Keeps blobs in a dict keyed by uri, verified like the real stores: for unit tests."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.fail_with: TaskqError | None = None

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Keep ``data`` under ``memory:///<key>`` and return its reference."""
        self._maybe_fail()
        ref = make_ref(f"memory:///{check_key(key)}", data, content_type)
        self.blobs[ref.uri] = data
        return ref

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the verified bytes kept under ``ref.uri`` (see ``BlobStore.get``)."""
        self._maybe_fail()
        data = self.blobs.get(ref.uri)
        if data is None:
            raise BlobStoreError(f"no blob at {ref.uri}")
        return verify(ref, data)

    async def delete(self, ref: PayloadRef) -> None:
        """Forget the blob under ``ref.uri``, if there is one."""
        self._maybe_fail()
        self.blobs.pop(ref.uri, None)

    async def ping(self) -> None:
        """Return at once unless ``fail_with`` is set: memory is always there."""
        self._maybe_fail()

    async def close(self) -> None:
        """Do nothing: there is nothing to release."""

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
