"""Claim-check blob stores: large payloads go here, messages carry a ``PayloadRef`` to them.

Every store checks on ``get`` that the bytes match the reference's size and sha256, so a
payload altered or swapped behind the store's back raises ``BlobIntegrityError``.
"""

from jobstore.blobs.base import BlobStore, blob_key
from jobstore.blobs.factory import open_blob_store
from jobstore.blobs.local import LocalDirBlobStore
from jobstore.blobs.s3 import S3BlobStore

__all__ = [
    "BlobStore",
    "LocalDirBlobStore",
    "S3BlobStore",
    "blob_key",
    "open_blob_store",
]
