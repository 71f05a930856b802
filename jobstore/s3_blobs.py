"""``S3BlobStore``: blobs as objects in an S3 bucket (AWS or any S3-compatible server)."""

from __future__ import annotations

import base64
import contextlib
import re

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from jobstore.blobs import PAYLOADS, BucketStore, StoredBlob, check_size, make_ref, verify
from topology.envelope import PayloadRef
from topology.errors import BlobStoreError, BlobUnavailableError

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_UNREACHABLE = (BotoConnectionError, HTTPClientError, IncompleteReadError)
_THROTTLED = frozenset({"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError"})


class S3BlobStore(BucketStore):
    """Keeps blobs as objects in one S3 bucket (AWS or any S3-compatible server)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "taskq/",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        """Check the bucket and prefix, and build the S3 client once (boto3 clients are thread-safe)."""
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
        super().__init__(f"s3://{bucket}", prefix)
        self.bucket = bucket
        self._where = endpoint_url or f"AWS S3 ({region})"
        # A session of our own: boto3.client() would share the module-global default session.
        session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        config = Config(
            # Per attempt; with two attempts a dead endpoint fails in seconds, not minutes.
            connect_timeout=5.0,
            read_timeout=30.0,
            retries={"max_attempts": 2, "mode": "standard"},
            # asyncio.to_thread runs up to min(32, cpus + 4) calls at once; a smaller pool would
            # open and drop connections under load instead of reusing them.
            max_pool_connections=32,
            # S3-compatible servers (moto, SeaweedFS, rclone) want bucket names in the path.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self._client = session.client("s3", endpoint_url=endpoint_url, config=config)

    async def ping(self) -> None:
        """Check the bucket exists and the credentials may use it."""
        await self._call(self._uri(self.prefix), self._client.head_bucket, Bucket=self.bucket)

    def _put(self, name: str, data: bytes, content_type: str) -> PayloadRef:
        ref = make_ref(self._uri(name), data, content_type)
        self._client.put_object(
            Bucket=self.bucket,
            Key=name,
            Body=data,
            ContentType=content_type,
            # The algorithm header makes S3 keep the checksum with the object, not only check it.
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(bytes.fromhex(ref.sha256)).decode("ascii"),
        )
        return ref

    def _delete(self, name: str) -> None:
        # S3 treats a missing object as deleted.
        self._client.delete_object(Bucket=self.bucket, Key=name)

    def _scan(self, after: str, limit: int) -> list[StoredBlob]:
        # One page: S3 lists keys in UTF-8 byte order, which is string order for plain keys.
        where = {"StartAfter": self.prefix + after} if after else {}
        listed = self._client.list_objects_v2(
            Bucket=self.bucket, Prefix=f"{self.prefix}{PAYLOADS}/", MaxKeys=limit, **where
        )
        found = listed.get("Contents", [])
        return self._listed(((i["Key"], i["LastModified"]) for i in found), after, limit)

    def _get(self, name: str, ref: PayloadRef) -> bytes:
        response = self._client.get_object(Bucket=self.bucket, Key=name)
        with contextlib.closing(response["Body"]) as body:
            # Check the size first so a swapped-in huge object is never read into memory.
            check_size(ref, int(response["ContentLength"]))
            data: bytes = body.read()
        return verify(ref, data)

    def _translate(self, exc: Exception, uri: str) -> BlobStoreError | None:
        # The one seam where botocore errors become ours.
        if isinstance(exc, _UNREACHABLE):
            return BlobUnavailableError(f"S3 at {self._where} is unreachable: {exc}")
        if isinstance(exc, BotoCoreError):
            return BlobStoreError(f"S3 request for {uri} failed: {exc}")
        if not isinstance(exc, ClientError):
            return None
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if status >= 500 or status == 429 or code in _THROTTLED:
            return BlobUnavailableError(f"S3 at {self._where} answered {code} ({status}) for {uri}")
        if code == "NoSuchBucket" or (status == 404 and exc.operation_name == "HeadBucket"):
            return BlobStoreError(f"S3 bucket {self.bucket!r} does not exist at {self._where}")
        if code in ("NoSuchKey", "404"):
            return BlobStoreError(f"no blob at {uri}")
        return BlobStoreError(f"S3 refused {exc.operation_name} on {uri}: {code} ({status})")
