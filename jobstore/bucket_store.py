"""``BucketStore``: the part every object-storage blob store shares (S3, Cloud Storage, Blob Storage)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import ParamSpec, TypeVar

from jobstore.blobs import KEY, StoredBlob, check_key
from topology.envelope import PayloadRef
from topology.errors import BlobStoreError

_T = TypeVar("_T")
_P = ParamSpec("_P")


class BucketStore:
    """Blobs as objects under a prefix of one bucket, through a blocking SDK run in threads (a subclass does the SDK's part)."""

    def __init__(self, home: str, prefix: str) -> None:
        """Check the prefix; ``home`` is the uri of the bucket (``s3://bucket``)."""
        folder = prefix.removesuffix("/")
        if folder and not KEY.fullmatch(folder):
            raise ValueError(f"prefix {prefix!r} must be empty or plain path segments")
        self.prefix = f"{folder}/" if folder else ""
        self._home = home

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Store ``data`` under ``key`` and return its reference (see ``BlobStore.put``)."""
        name = self.prefix + check_key(key)
        return await self._call(self._uri(name), self._put, name, data, content_type)

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the verified bytes of the object ``ref`` points to (see ``BlobStore.get``)."""
        return await self._call(ref.uri, self._get, self._name_of(ref.uri), ref)

    async def delete(self, uri: str) -> None:
        """Delete the object at ``uri``; a missing one is already deleted."""
        await self._call(uri, self._delete, self._name_of(uri))

    async def scan(self, *, after: str, limit: int) -> list[StoredBlob]:
        """Return up to ``limit`` payload objects whose keys sort after ``after``, in key order."""
        return await self._call(self._uri(self.prefix), self._scan, after, limit)

    async def ping(self) -> None:
        """Check the bucket exists and the credentials may list its objects."""
        await self.scan(after="", limit=1)

    def _uri(self, name: str) -> str:
        return f"{self._home}/{name}"

    def _listed(
        self, objects: Iterable[tuple[str, datetime]], after: str, limit: int
    ) -> list[StoredBlob]:
        """Return the first ``limit`` of a listing's (name, written) whose keys sort after ``after``."""
        # A listing may start at ``after`` itself, or ignore where it was asked to start.
        start = self.prefix + after
        found = (
            StoredBlob(n[len(self.prefix) :], self._uri(n), w) for n, w in objects if n > start
        )
        return list(itertools.islice(found, limit))

    def _name_of(self, uri: str) -> str:
        home = self._uri(self.prefix)
        if not uri.startswith(home):
            raise BlobStoreError(f"{uri} is not under {home}; refusing it")
        return self.prefix + check_key(uri[len(home) :])

    async def _call(
        self, uri: str, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except BlobStoreError:
            raise
        except Exception as exc:
            translated = self._translate(exc, uri)
            if translated is None:
                raise
            raise translated from exc

    def _put(self, name: str, data: bytes, content_type: str) -> PayloadRef:
        raise NotImplementedError

    def _get(self, name: str, ref: PayloadRef) -> bytes:
        raise NotImplementedError

    def _delete(self, name: str) -> None:
        raise NotImplementedError

    def _scan(self, after: str, limit: int) -> list[StoredBlob]:
        raise NotImplementedError

    def _translate(self, exc: Exception, uri: str) -> BlobStoreError | None:
        """Return ours for an SDK error about ``uri``, or ``None`` to let it through."""
        raise NotImplementedError
