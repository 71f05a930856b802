"""``open_blob_store``: the blob store a ``TASKQ_BLOB_URL`` names."""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from jobstore.blobs.base import BlobStore
from jobstore.blobs.local import LocalDirBlobStore
from jobstore.blobs.s3 import S3BlobStore
from topology.errors import SettingsError

_URL_VAR: Final = "TASKQ_BLOB_URL"


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
