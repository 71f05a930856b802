"""``GcsBlobStore``: blobs as objects in a Google Cloud Storage bucket, reached as the pod's identity."""

from __future__ import annotations

import contextlib
import re

import requests
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from jobstore.blobs import PAYLOADS, BucketStore, StoredBlob, make_ref, verify
from topology.envelope import PayloadRef
from topology.errors import BlobStoreError, BlobUnavailableError

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


class GcsBlobStore(BucketStore):
    """Keeps blobs as objects in one Cloud Storage bucket, under a prefix."""

    def __init__(
        self, bucket: str, *, prefix: str = "taskq/", endpoint_url: str | None = None
    ) -> None:
        """Check the bucket and prefix, and build the client once (application default credentials; none for an emulator)."""
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"{bucket!r} is not a valid Cloud Storage bucket name")
        super().__init__(f"gs://{bucket}", prefix)
        self.bucket = bucket
        self._where = endpoint_url or "Google Cloud Storage"
        if endpoint_url:
            from google.auth.credentials import AnonymousCredentials

            self._client = storage.Client(
                project="taskq",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": endpoint_url},
            )
        else:
            self._client = storage.Client()
        self._bucket = self._client.bucket(bucket)

    def _put(self, name: str, data: bytes, content_type: str) -> PayloadRef:
        # The client sends the CRC32C, so the service refuses a corrupted upload.
        self._bucket.blob(name).upload_from_string(
            data, content_type=content_type, checksum="crc32c", timeout=_TIMEOUT, retry=_RETRY
        )
        return make_ref(self._uri(name), data, content_type)

    def _get(self, name: str, ref: PayloadRef) -> bytes:
        # One byte past the recorded size at most, so a swapped-in huge object is never read
        # into memory, and a longer one still fails the size check.
        end = ref.size if ref.size else None
        data: bytes = self._bucket.blob(name).download_as_bytes(
            start=0, end=end, checksum=None, timeout=_TIMEOUT, retry=_RETRY
        )
        return verify(ref, data)

    def _delete(self, name: str) -> None:
        with contextlib.suppress(google_errors.NotFound):
            self._bucket.blob(name).delete(timeout=_TIMEOUT, retry=_RETRY)

    def _scan(self, after: str, limit: int) -> list[StoredBlob]:
        # start_offset is inclusive: one more result covers the cursor itself.
        listed = self._client.list_blobs(
            self._bucket,
            prefix=f"{self.prefix}{PAYLOADS}/",
            start_offset=self.prefix + after if after else None,
            max_results=limit + 1,
            timeout=_TIMEOUT,
            retry=_RETRY,
        )
        return self._listed(((blob.name, blob.updated) for blob in listed), after, limit)

    def _translate(self, exc: Exception, uri: str) -> BlobStoreError | None:
        if isinstance(exc, google_errors.NotFound):
            if uri == self._uri(self.prefix):
                return BlobStoreError(
                    f"Cloud Storage bucket {self.bucket!r} does not exist at {self._where}"
                )
            return BlobStoreError(f"no blob at {uri}")
        if isinstance(exc, _UNAVAILABLE):
            return BlobUnavailableError(f"Cloud Storage at {self._where} is unavailable: {exc}")
        if isinstance(exc, auth_errors.DefaultCredentialsError):
            return BlobStoreError(
                f"no Google credentials for gs://{self.bucket}: {exc} (on GKE, annotate the pod's "
                "service account with iam.gke.io/gcp-service-account)"
            )
        if isinstance(exc, google_errors.GoogleAPICallError):
            return BlobStoreError(f"Cloud Storage refused {uri}: {exc}")
        return None
