"""``LocalDirBlobStore``: blobs as files under one directory, the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

from jobstore.blobs.base import _check_key, _check_size, _make_ref, _verify
from topology.envelope import PayloadRef
from topology.errors import BlobStoreError

_T = TypeVar("_T")
_P = ParamSpec("_P")


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
