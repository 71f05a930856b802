"""Claim-check blob stores: large payloads go here, messages carry a verified ``PayloadRef`` to them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, ParamSpec, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from topology.envelope import PayloadRef
from topology.errors import BlobIntegrityError, BlobStoreError, SettingsError

_T = TypeVar("_T")
_P = ParamSpec("_P")

# Segments may not start with "." (no "..", and no clash with the stores' ".tmp-" files).
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_KEY_MAX: Final = 900  # S3 allows 1024 bytes; leave room for the prefix
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
PAYLOADS: Final = "payloads"  # the folder of the job payloads (``blob_key``)


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A job's payload blob as a listing finds it: its key, uri and when it was written."""

    key: str
    uri: str
    written_at: datetime

    @property
    def job_id(self) -> str:
        """Return the id of the job whose payload it holds (the last part of its key)."""
        return self.key.rpartition("/")[2]


class BlobStore(Protocol):
    """Where claim-checked payloads are kept: put, get (verified), delete, a listing and a health probe."""

    async def put(self, key: str, data: bytes, content_type: str) -> PayloadRef:
        """Store ``data`` under ``key`` and return a reference holding its uri, sha256 and size."""

    async def get(self, ref: PayloadRef) -> bytes:
        """Return the bytes ``ref`` points to."""

    async def delete(self, uri: str) -> None:
        """Remove the blob at ``uri`` (a ``PayloadRef.uri``); a missing blob is not an error."""

    async def scan(self, *, after: str, limit: int) -> list[StoredBlob]:
        """Return up to ``limit`` payload blobs (``blob_key``) whose keys sort after ``after``, in key order."""

    async def ping(self) -> None:
        """Return when the store is usable, or raise ``BlobStoreError`` saying why not."""

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


def blob_key(job_id: str) -> str:
    """Return the storage key of a job's payload, fanned out over 256 prefixes."""
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} is not a plain id; refusing to build a key from it")
    # Not job_id[:2]: the leading characters of a UUIDv7 are its timestamp, the same for years.
    fan = hashlib.sha256(job_id.encode()).hexdigest()[:2]
    return f"{PAYLOADS}/{fan}/{job_id}"


def check_key(key: str) -> str:
    """Return ``key`` if it is a plain relative path; raise ``BlobStoreError`` otherwise."""
    if len(key) > _KEY_MAX or not KEY.fullmatch(key):
        raise BlobStoreError(f"blob key {key!r} is not a plain relative path; refusing it")
    return key


def make_ref(uri: str, data: bytes, content_type: str) -> PayloadRef:
    """Return the reference of ``data`` kept at ``uri``."""
    digest = hashlib.sha256(data).hexdigest()
    return PayloadRef(uri=uri, sha256=digest, size=len(data), content_type=content_type)


def check_size(ref: PayloadRef, size: int) -> None:
    """Raise ``BlobIntegrityError`` unless ``size`` is the size ``ref`` records."""
    if size != ref.size:
        raise BlobIntegrityError(
            f"blob {ref.uri} holds {size} bytes; its reference says {ref.size}"
        )


def verify(ref: PayloadRef, data: bytes) -> bytes:
    """Return ``data`` if its size and sha256 match ``ref``; raise ``BlobIntegrityError`` otherwise."""
    check_size(ref, len(data))
    digest = hashlib.sha256(data).hexdigest()
    if digest != ref.sha256:
        raise BlobIntegrityError(
            f"blob {ref.uri} has sha256 {digest}; its reference says {ref.sha256}"
        )
    return data


_URL_VAR: Final = "TASKQ_BLOB_URL"


def open_blob_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str = "us-east-1",
    access_key: str | None = None,
    secret_key: str | None = None,
    cloud_endpoint_url: str | None = None,
    azure_key: str | None = None,
) -> BlobStore:
    """Return the store ``url`` names: ``file:///abs/dir``, ``file:rel/dir``, ``s3://bucket/prefix``, ``gs://bucket/prefix`` or ``azblob://account/container/prefix``."""
    # ``endpoint_url``, ``region`` and the keys are S3's; ``cloud_endpoint_url`` is Cloud
    # Storage's or Blob Storage's.
    parts = urlsplit(url)
    scheme, host, path = parts.scheme, parts.netloc, parts.path.lstrip("/")
    if "@" in host:  # not echoed: it may hold a password
        raise SettingsError(
            f"{_URL_VAR} carries credentials; "
            "S3 takes them from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if scheme == "file":
        if host not in ("", "localhost") or not parts.path:
            raise SettingsError(
                f"{_URL_VAR}: {url!r} names no local directory; "
                "use file:///absolute/dir or file:relative/dir (no //)"
            )
        return LocalDirBlobStore(Path(unquote(parts.path)))
    # Each SDK is only loaded for its own scheme.
    try:
        if scheme == "s3":
            from jobstore.s3_blobs import S3BlobStore

            return S3BlobStore(
                host,
                prefix=path,
                endpoint_url=endpoint_url,
                region=region,
                access_key=access_key,
                secret_key=secret_key,
            )
        if scheme == "gs":
            from jobstore.gcs_blobs import GcsBlobStore

            return GcsBlobStore(host, prefix=path, endpoint_url=cloud_endpoint_url)
        if scheme == "azblob":
            from jobstore.azure_blobs import AzureBlobStore

            container, _, prefix = path.partition("/")
            return AzureBlobStore(
                host,
                container,
                prefix=prefix,
                endpoint_url=cloud_endpoint_url,
                account_key=azure_key,
            )
    except ValueError as exc:
        raise SettingsError(f"{_URL_VAR}: {exc} (got {url!r})") from exc
    except ImportError as exc:  # an optional extra (gcs, azure): the default install stays small
        extra = "gcs" if scheme == "gs" else "azure"
        raise SettingsError(
            f"{_URL_VAR}: {scheme}:// needs its SDK, which is not installed "
            f"(pip install 'taskq[{extra}]'): {exc}"
        ) from exc
    raise SettingsError(
        f"{_URL_VAR}: unsupported scheme {scheme!r} in {url!r}; use file:///absolute/dir, "
        "file:relative/dir, s3://bucket/prefix, gs://bucket/prefix or azblob://account/container/prefix"
    )


class BucketStore:
    """Blobs as objects under a prefix of one bucket, through a blocking SDK run in threads (a subclass does the SDK's part)."""

    def __init__(self, home: str, prefix: str) -> None:
        """Check the prefix; ``home`` is the uri of the bucket (``s3://bucket``)."""
        folder = prefix.removesuffix("/")
        if folder and not KEY.fullmatch(folder):
            raise ValueError(f"prefix {prefix!r} must be empty or plain path segments")
        self.prefix = f"{folder}/" if folder else ""
        self._home = home
        self._client: Any = None  # the SDK's, which a subclass builds

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

    async def close(self) -> None:
        """Close the SDK client's connections."""
        self._client.close()

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


class LocalDirBlobStore(BucketStore):
    """Keeps blobs as files under one directory: the embedded default, with atomic writes."""

    def __init__(self, root: Path) -> None:
        # Resolved once, so a relative root stays put if the working directory changes later.
        self.root = root.resolve()
        super().__init__(self.root.as_uri().rstrip("/"), "")  # "/": its files are file:///x

    async def ping(self) -> None:
        """Create the root if needed and check it is a writable directory."""
        await self._call(self._home, _ensure_writable_dir, self.root)

    async def close(self) -> None:
        """Do nothing: no file stays open between calls."""

    # The methods below touch the file system (even resolve() reads links): threads only.

    def _put(self, name: str, data: bytes, content_type: str) -> PayloadRef:
        path = self._inside_root(name)
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
        # Without this the rename itself may be lost in a crash even though the data was synced.
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return make_ref(path.as_uri(), data, content_type)

    def _get(self, name: str, ref: PayloadRef) -> bytes:
        with self._inside_root(name).open("rb") as file:
            # Check the size first so a swapped-in huge file is never read into memory.
            check_size(ref, os.fstat(file.fileno()).st_size)
            return verify(ref, file.read())

    def _delete(self, name: str) -> None:
        self._inside_root(name).unlink(missing_ok=True)

    def _scan(self, after: str, limit: int) -> list[StoredBlob]:
        found: list[StoredBlob] = []
        top = self.root / PAYLOADS
        if not top.is_dir():
            return found
        with os.scandir(top) as entries:
            fans = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        for fan in fans:
            folder = f"{PAYLOADS}/{fan}/"
            if folder < after[: len(folder)]:
                continue  # every key in it sorts before ``after``
            with os.scandir(top / fan) as entries:
                # Not the ".tmp-" files of writes in progress: they are no blobs yet.
                names = [e.name for e in entries if e.is_file(follow_symlinks=False)]
            for name in sorted(n for n in names if n[0] != "." and folder + n > after):
                path = top / fan / name
                try:
                    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                except FileNotFoundError:  # deleted since the listing
                    continue
                found.append(StoredBlob(folder + name, path.as_uri(), written))
                if len(found) == limit:
                    return found
        return found

    def _inside_root(self, name: str) -> Path:
        # resolve() folds ".." and follows symlinks, so neither can lead out of the root.
        uri = self._uri(name)
        try:
            resolved = (self.root / name).resolve()
        except RuntimeError as exc:  # a symlink loop (Python 3.11; OSError from 3.13)
            raise BlobStoreError(f"{uri} is a symlink loop; refusing it") from exc
        if resolved == self.root or not resolved.is_relative_to(self.root):
            raise BlobStoreError(f"{uri} lies outside the blob directory {self.root}; refusing it")
        return resolved

    def _translate(self, exc: Exception, uri: str) -> BlobStoreError | None:
        # The one seam where file-system errors become ours.
        if isinstance(exc, FileNotFoundError):
            return BlobStoreError(f"no blob at {uri}")
        if isinstance(exc, OSError):
            return BlobStoreError(f"blob file {uri}: {exc.strerror or exc}")
        return None


def _ensure_writable_dir(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(13, "blob directory is not writable", str(root))
