"""``GcsBlobStore``: blobs as objects in a Google Cloud Storage bucket, reached as the pod's identity."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import requests
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from jobstore.blobs import KEY, PAYLOADS, StoredBlob, check_key, make_ref, verify
from topology.envelope import PayloadRef
from topology.errors import BlobStoreError, BlobUnavailableError

_T = TypeVar("_T")
_P = ParamSpec("_P")

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_UNAVAILABLE = (
    google_errors.ServerError,  # 5xx
    google_errors.TooManyRequests,
    google_errors.RetryError,
    requests.ConnectionError,
    requests.Timeout,
    auth_errors.TransportError,  # the metadata server or token endpoint did not answer
)
_TIMEOUT = (5.0, 30.0)  # connect, read, per attempt
# Retries of transient errors stop after a few seconds (the client's default goes on for two
# minutes): a dead endpoint fails fast, and the caller's own retry takes over.
_RETRY = DEFAULT_RETRY.with_timeout(5.0)


class GcsBlobStore:
    """Keeps blobs as objects in one Cloud Storage bucket, under a prefix."""

    def __init__(
        self, bucket: str, *, prefix: str = "taskq/", endpoint_url: str | None = None
    ) -> None:
        """Check the bucket and prefix, and build the client once (credentials from the environment).

        Credentials are Google's application default ones: on GKE the pod's Workload Identity.
        With ``endpoint_url`` (an emulator) the client sends none.
        """
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"{bucket!r} is not a valid Cloud Storage bucket name")
        folder = prefix.removesuffix("/")
        if folder and not KEY.fullmatch(folder):
            raise ValueError(
                f"Cloud Storage prefix {prefix!r} must be empty or plain path segments"
            )
        self.bucket = bucket
        self.prefix = f"{folder}/" if folder else ""
        self._where = endpoint_url or "Google Cloud Storage"
        self._client = _gcs_client(endpoint_url)
        self._bucket = self._client.bucket(bucket)

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Upload ``data``; the client sends its CRC32C, so a corrupted upload is refused."""
        name = self.prefix + check_key(key)
        return await self._call(self._uri(name), self._put, name, data, content_type)

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the verified bytes of the object ``ref`` points to (see ``BlobStore.get``)."""
        return await self._call(ref.uri, self._get, self._name_of(ref.uri), ref)

    async def delete(self, uri: str) -> None:
        """Delete the object at ``uri``; a missing one is already deleted."""
        await self._call(uri, self._delete, self._name_of(uri))

    async def scan(self, *, after: str, limit: int) -> list[StoredBlob]:
        """Return up to ``limit`` payload objects whose names sort after ``after``, in name order."""
        return await self._call(self._uri(self.prefix), self._scan, after, limit)

    async def ping(self) -> None:
        """Check the bucket exists and the identity may list its objects (no bucket-level role needed)."""
        await self._call(self._uri(self.prefix), self._scan, "", 1)

    async def close(self) -> None:
        """Close the client's HTTP session."""
        self._client.close()

    def _uri(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"

    def _name_of(self, uri: str) -> str:
        home = self._uri(self.prefix)
        if not uri.startswith(home):
            raise BlobStoreError(f"{uri} is not under {home}; refusing it")
        return self.prefix + check_key(uri[len(home) :])

    def _put(self, name: str, data: bytes, content_type: str) -> PayloadRef:
        blob = self._bucket.blob(name)
        blob.upload_from_string(
            data, content_type=content_type, checksum="crc32c", timeout=_TIMEOUT, retry=_RETRY
        )
        return make_ref(self._uri(name), data, content_type)

    def _get(self, name: str, ref: PayloadRef) -> bytes:
        blob = self._bucket.blob(name)
        # One byte past the recorded size at most, so a swapped-in huge object is never read
        # into memory, and a longer one still fails the size check.
        end = ref.size if ref.size else None
        data: bytes = blob.download_as_bytes(
            start=0, end=end, checksum=None, timeout=_TIMEOUT, retry=_RETRY
        )
        return verify(ref, data)

    def _delete(self, name: str) -> None:
        with contextlib.suppress(google_errors.NotFound):
            self._bucket.blob(name).delete(timeout=_TIMEOUT, retry=_RETRY)

    def _scan(self, after: str, limit: int) -> list[StoredBlob]:
        start = self.prefix + after if after else None
        # start_offset is inclusive: one more result covers the cursor itself.
        listed = self._client.list_blobs(
            self._bucket,
            prefix=f"{self.prefix}{PAYLOADS}/",
            start_offset=start,
            max_results=limit + 1,
            timeout=_TIMEOUT,
            retry=_RETRY,
        )
        found = [
            StoredBlob(blob.name[len(self.prefix) :], self._uri(blob.name), blob.updated)
            for blob in listed
            if start is None or blob.name > start
        ]
        return found[:limit]

    async def _call(
        self, uri: str, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        # The one seam where Google's errors become ours.
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except google_errors.NotFound as exc:
            raise self._not_found(uri) from exc
        except _UNAVAILABLE as exc:
            raise BlobUnavailableError(
                f"Cloud Storage at {self._where} is unavailable: {exc}"
            ) from exc
        except auth_errors.DefaultCredentialsError as exc:
            raise BlobStoreError(
                f"no Google credentials for gs://{self.bucket}: {exc} (on GKE, annotate the pod's "
                "service account with iam.gke.io/gcp-service-account)"
            ) from exc
        except google_errors.GoogleAPICallError as exc:
            raise BlobStoreError(f"Cloud Storage refused {uri}: {exc}") from exc

    def _not_found(self, uri: str) -> BlobStoreError:
        if uri == self._uri(self.prefix):
            return BlobStoreError(
                f"Cloud Storage bucket {self.bucket!r} does not exist at {self._where}"
            )
        return BlobStoreError(f"no blob at {uri}")


def _gcs_client(endpoint_url: str | None) -> Any:
    if endpoint_url:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project="taskq",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": endpoint_url},
        )
    return storage.Client()
