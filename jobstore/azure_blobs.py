"""``AzureBlobStore``: blobs in an Azure Blob Storage container, reached as the pod's identity."""

from __future__ import annotations

import contextlib
import re
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings, LinearRetry

from jobstore.blobs import PAYLOADS, BucketStore, StoredBlob, check_size, make_ref, verify
from topology.envelope import PayloadRef
from topology.errors import BlobStoreError, BlobUnavailableError

_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_UNAVAILABLE = (ServiceRequestError, ServiceResponseError)


class AzureBlobStore(BucketStore):
    """Keeps blobs in one Blob Storage container, under a prefix."""

    def __init__(
        self,
        account: str,
        container: str,
        *,
        prefix: str = "taskq/",
        endpoint_url: str | None = None,
        account_key: str | None = None,
    ) -> None:
        """Check the names, and build the client once (thread-safe; without ``account_key``, Entra ID's default chain)."""
        if not _ACCOUNT.fullmatch(account):
            raise ValueError(f"{account!r} is not a valid storage account name (3-24 of a-z 0-9)")
        if not _CONTAINER.fullmatch(container):
            raise ValueError(f"{container!r} is not a valid container name (3-63 of a-z 0-9 -)")
        super().__init__(f"azblob://{account}/{container}", prefix)
        self.account, self.container = account, container
        self._where = endpoint_url or f"https://{account}.blob.core.windows.net"
        self._credential: Any = {"account_name": account, "account_key": account_key}
        if not account_key:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        # Timeouts per attempt, and two retries about a second apart (the client's default
        # waits 15 s, then 45 s): a dead endpoint fails in seconds, and the caller's retry
        # takes over.
        retry = LinearRetry(backoff=1, random_jitter_range=1, retry_total=2)
        self._service = BlobServiceClient(
            self._where,
            credential=self._credential,
            connection_timeout=5,
            read_timeout=30,
            retry_policy=retry,
        )
        self._container = self._service.get_container_client(container)

    async def close(self) -> None:
        """Close the client and its credential."""
        self._service.close()
        if hasattr(self._credential, "close"):
            self._credential.close()

    def _put(self, name: str, data: bytes, content_type: str) -> PayloadRef:
        self._container.get_blob_client(name).upload_blob(
            data,
            overwrite=True,
            validate_content=True,
            content_settings=ContentSettings(content_type=content_type),
        )
        return make_ref(self._uri(name), data, content_type)

    def _get(self, name: str, ref: PayloadRef) -> bytes:
        download = self._container.get_blob_client(name).download_blob()
        # Check the size first so a swapped-in huge blob is never read into memory.
        check_size(ref, download.size)
        return verify(ref, download.readall())

    def _delete(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.get_blob_client(name).delete_blob()

    def _scan(self, after: str, limit: int) -> list[StoredBlob]:
        # start_from (inclusive) spares listing what comes before.
        listing = self._container.list_blobs(
            name_starts_with=f"{self.prefix}{PAYLOADS}/",
            results_per_page=limit + 1,
            start_from=self.prefix + after if after else None,
        )
        return self._listed(((item.name, item.last_modified) for item in listing), after, limit)

    def _translate(self, exc: Exception, uri: str) -> BlobStoreError | None:
        if not isinstance(exc, AzureError):
            return None
        if isinstance(exc, _UNAVAILABLE):
            return BlobUnavailableError(
                f"Azure Blob Storage at {self._where} is unreachable: {exc}"
            )
        if isinstance(exc, ClientAuthenticationError):
            return BlobStoreError(
                f"Azure refused the credentials for {uri}: {exc.message} (on AKS, label the pod "
                "azure.workload.identity/use and annotate its service account with the client id)"
            )
        if isinstance(exc, ResourceNotFoundError):
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                return BlobStoreError(
                    f"container {self.container!r} does not exist in storage account "
                    f"{self.account!r} at {self._where}"
                )
            return BlobStoreError(f"no blob at {uri}")
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        if status is not None and (status >= 500 or status == 429):
            return BlobUnavailableError(
                f"Azure Blob Storage at {self._where} answered {status} for {uri}"
            )
        return BlobStoreError(f"Azure Blob Storage refused {uri}: {exc}")
