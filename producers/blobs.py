"""Claim-check blob stores: large payloads go here, messages carry a ``PayloadRef`` to them.

Every store checks on ``get`` that the bytes match the reference's size and sha256, so a
payload altered or swapped behind the store's back raises ``BlobIntegrityError``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, ParamSpec, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from producers.errors import BlobIntegrityError, BlobStoreError, BlobUnavailableError
from topology.envelope import PayloadRef
from topology.errors import SettingsError, TaskqError

_T = TypeVar("_T")
_P = ParamSpec("_P")

# Segments may not start with "." (no "..", and no clash with the stores' ".tmp-" files).
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_KEY_MAX: Final = 900  # S3 allows 1024 bytes; leave room for the prefix
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_URL_VAR: Final = "TASKQ_BLOB_URL"

# Per attempt; with two attempts a dead endpoint fails in seconds, not minutes.
_CONNECT_TIMEOUT_S: Final = 5.0
_READ_TIMEOUT_S: Final = 30.0
# asyncio.to_thread runs up to min(32, cpus + 4) calls at once; a smaller pool would
# open and drop connections under load instead of reusing them.
_POOL_SIZE: Final = 32
_UNREACHABLE = (BotoConnectionError, HTTPClientError, IncompleteReadError)
_THROTTLED = frozenset({"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError"})


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


class LocalDirBlobStore:
    """Keeps blobs as files under one directory: the embedded default, with atomic writes."""

    def __init__(self, root: Path) -> None:
        # Resolved once, so a relative root stays put if the working directory changes later.
        self.root = root.resolve()

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Write ``data`` to ``<root>/<key>`` atomically and return its reference."""
        uri = (self.root / _check_key(key)).as_uri()
        return await self._io(uri, self._write, key, data, content_type)

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the verified bytes of the file ``ref`` points to (see ``BlobStore.get``)."""
        return await self._io(ref.uri, self._read, ref)

    async def delete(self, ref: PayloadRef) -> None:
        """Remove the file ``ref`` points to, if it is there."""
        await self._io(ref.uri, self._unlink, ref.uri)

    async def ping(self) -> None:
        """Create the root if needed and check it is a writable directory."""
        await self._io(self.root.as_uri(), _ensure_writable_dir, self.root)

    async def close(self) -> None:
        """Do nothing: no file stays open between calls."""

    # The helpers below touch the file system (even resolve() reads links): threads only.

    def _write(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        path = self._inside_root(self.root / key, key)
        _write_atomically(path, data)
        return _make_ref(path.as_uri(), data, content_type)

    def _read(self, ref: PayloadRef) -> bytes:
        return _read_verified(self._path_of(ref.uri), ref)

    def _unlink(self, uri: str) -> None:
        self._path_of(uri).unlink(missing_ok=True)

    def _path_of(self, uri: str) -> Path:
        parts = urlsplit(uri)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise BlobStoreError(f"{uri} is not a local file uri; this store keeps {self.root}")
        return self._inside_root(Path(unquote(parts.path)), uri)

    def _inside_root(self, path: Path, what: str) -> Path:
        # resolve() folds ".." and follows symlinks, so neither can lead out of the root.
        try:
            resolved = path.resolve()
        except RuntimeError as exc:  # a symlink loop (Python 3.11; OSError from 3.13)
            raise BlobStoreError(f"{what} is a symlink loop; refusing it") from exc
        if resolved == self.root or not resolved.is_relative_to(self.root):
            raise BlobStoreError(f"{what} lies outside the blob directory {self.root}; refusing it")
        return resolved

    @staticmethod
    async def _io(uri: str, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        # The one seam where file-system errors become ours.
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except FileNotFoundError as exc:
            raise BlobStoreError(f"no blob at {uri}") from exc
        except OSError as exc:
            raise BlobStoreError(f"blob file {uri}: {exc.strerror or exc}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temp file in the same directory, so os.replace is a rename on one file system:
    # readers see the old blob or the whole new one, never a torn write.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Without this the rename itself may be lost in a crash even though the data was synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_verified(path: Path, ref: PayloadRef) -> bytes:
    with path.open("rb") as file:
        # Check the size first so a swapped-in huge file is never read into memory.
        _check_size(ref, os.fstat(file.fileno()).st_size)
        return _verify(ref, file.read())


def _ensure_writable_dir(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(13, "blob directory is not writable", str(root))


class S3BlobStore:
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
        client: Any = None,
    ) -> None:
        """Build the S3 client once (boto3 clients are thread-safe), or use ``client``.

        Raises:
            ValueError: when ``bucket`` or ``prefix`` is not a valid S3 name.
        """
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
        if prefix and not (prefix.endswith("/") and _KEY.fullmatch(prefix[:-1])):
            raise ValueError(
                f"S3 prefix {prefix!r} must be empty or plain path segments ending in /"
            )
        self.bucket = bucket
        self.prefix = prefix
        self._where = endpoint_url or f"AWS S3 ({region})"
        self._owns_client = client is None
        self._client = client or _s3_client(endpoint_url, region, access_key, secret_key)

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Upload ``data`` with its sha256 so S3 itself rejects a corrupted upload."""
        name = self.prefix + _check_key(key)
        return await self._call(self._uri(name), self._put, name, data, content_type)

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the verified bytes of the object ``ref`` points to (see ``BlobStore.get``)."""
        return await self._call(ref.uri, self._get, self._key_of(ref.uri), ref)

    async def delete(self, ref: PayloadRef) -> None:
        """Delete the object ``ref`` points to; S3 treats a missing one as deleted."""
        name = self._key_of(ref.uri)
        await self._call(ref.uri, self._client.delete_object, Bucket=self.bucket, Key=name)

    async def ping(self) -> None:
        """Check the bucket exists and the credentials may use it."""
        await self._call(self._uri(self.prefix), self._client.head_bucket, Bucket=self.bucket)

    async def close(self) -> None:
        """Close the client's connections, unless the client was handed in by the caller."""
        if self._owns_client:
            self._client.close()

    def _uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def _key_of(self, uri: str) -> str:
        home = self._uri(self.prefix)
        if not uri.startswith(home):
            raise BlobStoreError(f"{uri} is not under {home}; refusing it")
        return self.prefix + _check_key(uri[len(home) :])

    def _put(self, name: str, data: bytes, content_type: str) -> PayloadRef:
        ref = _make_ref(self._uri(name), data, content_type)
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

    def _get(self, name: str, ref: PayloadRef) -> bytes:
        response = self._client.get_object(Bucket=self.bucket, Key=name)
        with contextlib.closing(response["Body"]) as body:
            # Check the size first so a swapped-in huge object is never read into memory.
            _check_size(ref, int(response["ContentLength"]))
            data: bytes = body.read()
        return _verify(ref, data)

    async def _call(
        self, uri: str, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        # The one seam where botocore errors become ours.
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ClientError as exc:
            raise self._client_error(exc, uri) from exc
        except _UNREACHABLE as exc:
            raise BlobUnavailableError(f"S3 at {self._where} is unreachable: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreError(f"S3 request for {uri} failed: {exc}") from exc

    def _client_error(self, exc: Any, uri: str) -> BlobStoreError:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if status >= 500 or status == 429 or code in _THROTTLED:
            return BlobUnavailableError(f"S3 at {self._where} answered {code} ({status}) for {uri}")
        if code == "NoSuchBucket" or (status == 404 and exc.operation_name == "HeadBucket"):
            return BlobStoreError(f"S3 bucket {self.bucket!r} does not exist at {self._where}")
        if code in ("NoSuchKey", "404"):
            return BlobStoreError(f"no blob at {uri}")
        return BlobStoreError(f"S3 refused {exc.operation_name} on {uri}: {code} ({status})")


def _s3_client(
    endpoint_url: str | None, region: str, access_key: str | None, secret_key: str | None
) -> Any:
    # A session of our own: boto3.client() would share the module-global default session.
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
    )
    config = Config(
        connect_timeout=_CONNECT_TIMEOUT_S,
        read_timeout=_READ_TIMEOUT_S,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=_POOL_SIZE,
        # S3-compatible servers (moto, SeaweedFS, rclone) want bucket names in the path.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


class InMemoryBlobStore:
    """Keeps blobs in a dict keyed by uri, verified like the real stores: for unit tests."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.fail_with: TaskqError | None = None

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Keep ``data`` under ``memory:///<key>`` and return its reference."""
        self._maybe_fail()
        ref = _make_ref(f"memory:///{_check_key(key)}", data, content_type)
        self.blobs[ref.uri] = data
        return ref

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the verified bytes kept under ``ref.uri`` (see ``BlobStore.get``)."""
        self._maybe_fail()
        data = self.blobs.get(ref.uri)
        if data is None:
            raise BlobStoreError(f"no blob at {ref.uri}")
        return _verify(ref, data)

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


def open_blob_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    access_key: str | None = None,
    secret_key: str | None = None,
) -> BlobStore:
    """Return the store ``url`` names: ``file:///abs/dir``, ``file:rel/dir`` or ``s3://bucket/prefix``.

    ``s3://bucket`` without a path keeps blobs at the top of the bucket.

    Raises:
        SettingsError: when the url is malformed or its scheme is unknown; it names TASKQ_BLOB_URL.
    """
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise SettingsError(
            f"{_URL_VAR}: {_redact(url)!r} carries credentials; "
            "S3 takes them from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if parts.scheme == "file":
        return LocalDirBlobStore(_local_root(url, parts.netloc, parts.path))
    if parts.scheme == "s3":
        prefix = parts.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        try:
            return S3BlobStore(
                parts.netloc,
                prefix=prefix,
                endpoint_url=endpoint_url,
                region=region,
                access_key=access_key,
                secret_key=secret_key,
            )
        except ValueError as exc:
            raise SettingsError(f"{_URL_VAR}: {exc} (got {url!r})") from exc
    raise SettingsError(
        f"{_URL_VAR}: unsupported scheme {parts.scheme!r} in {_redact(url)!r}; "
        "use file:///absolute/dir, file:relative/dir or s3://bucket/prefix"
    )


def _local_root(url: str, host: str, path: str) -> Path:
    if host not in ("", "localhost"):
        raise SettingsError(
            f"{_URL_VAR}: {url!r} names host {host!r}; "
            "use file:///absolute/dir or file:relative/dir (no //)"
        )
    if not path:
        raise SettingsError(f"{_URL_VAR}: {url!r} names no directory")
    return Path(unquote(path))


def _redact(url: str) -> str:
    # A password in the URL must not reach logs or error messages.
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
