"""The BlobStore contract, run against the local directory, S3 (a real moto server), Cloud Storage (gcp-storage-emulator), Blob Storage (Azurite) and memory."""

import asyncio
import base64
import hashlib
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from jobstore.azure_blobs import AzureBlobStore
from jobstore.blobs import BlobStore, LocalDirBlobStore, blob_key, open_blob_store
from jobstore.gcs_blobs import GcsBlobStore
from jobstore.s3_blobs import S3BlobStore
from tests.cloudblobs import AZURITE_ACCOUNT, AZURITE_KEY
from tests.fakes.blobs import InMemoryBlobStore
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, s3_client
from topology.envelope import PayloadRef, new_job_id
from topology.errors import BlobIntegrityError, BlobStoreError, BlobUnavailableError, SettingsError

MIB = 1024 * 1024


@dataclass
class Harness:
    store: BlobStore
    # Writes bytes behind the store's back, where ``ref`` points.
    tamper: Callable[[PayloadRef, bytes], None]


def _s3_store(endpoint: str, bucket: str) -> S3BlobStore:
    return S3BlobStore(
        bucket,
        endpoint_url=endpoint,
        region=REGION,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
    )


def _empty_and_delete_bucket(client, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def s3_admin(s3_endpoint: str):
    """Yield a raw boto3 client for arranging and inspecting S3 behind the stores' backs."""
    # One per module: building a boto3 client costs about 0.1 s.
    client = s3_client(s3_endpoint)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def s3_bucket(s3_admin):
    """Create a fresh bucket on the moto server; yield (raw client, bucket) and remove it."""
    bucket = f"taskq-test-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=bucket)
    try:
        yield s3_admin, bucket
    finally:
        _empty_and_delete_bucket(s3_admin, bucket)


@pytest.fixture
def gcs_bucket(gcs_endpoint):
    """Create a fresh bucket on the Cloud Storage emulator; yield (raw bucket, name)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="taskq",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_endpoint},
    )
    name = f"taskq-test-{uuid.uuid4().hex[:12]}"
    bucket = client.create_bucket(name)
    try:
        yield bucket, name
    finally:
        for blob in client.list_blobs(bucket):
            blob.delete()
        bucket.delete()
        client.close()


@pytest.fixture
def azure_container(azurite_endpoint):
    """Create a fresh container on Azurite; yield (raw container client, name)."""
    from azure.storage.blob import BlobServiceClient

    credential = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    with BlobServiceClient(azurite_endpoint, credential=credential) as service:
        name = f"taskq-test-{uuid.uuid4().hex[:12]}"
        container = service.create_container(name)
        try:
            yield container, name
        finally:
            container.delete_container()


def _azure_store(endpoint: str, container: str, **options) -> AzureBlobStore:
    return AzureBlobStore(
        AZURITE_ACCOUNT, container, endpoint_url=endpoint, account_key=AZURITE_KEY, **options
    )


@pytest.fixture(params=["local", "s3", "gcs", "azure", "memory"])
async def harness(request, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "local":

        def rewrite_file(ref: PayloadRef, data: bytes) -> None:
            Path(urlsplit(ref.uri).path).write_bytes(data)

        yield Harness(LocalDirBlobStore(tmp_path / "blobs"), rewrite_file)
    elif request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        client, bucket = request.getfixturevalue("s3_bucket")

        def put_directly(ref: PayloadRef, data: bytes) -> None:
            key = ref.uri.removeprefix(f"s3://{bucket}/")
            client.put_object(Bucket=bucket, Key=key, Body=data)

        store = _s3_store(endpoint, bucket)
        try:
            yield Harness(store, put_directly)
        finally:
            await store.close()
    elif request.param == "gcs":
        endpoint = request.getfixturevalue("gcs_endpoint")
        raw, name = request.getfixturevalue("gcs_bucket")

        def upload_directly(ref: PayloadRef, data: bytes) -> None:
            raw.blob(ref.uri.removeprefix(f"gs://{name}/")).upload_from_string(data)

        store = GcsBlobStore(name, endpoint_url=endpoint)
        try:
            yield Harness(store, upload_directly)
        finally:
            await store.close()
    elif request.param == "azure":
        endpoint = request.getfixturevalue("azurite_endpoint")
        raw, name = request.getfixturevalue("azure_container")
        home = f"azblob://{AZURITE_ACCOUNT}/{name}/"

        def upload_behind(ref: PayloadRef, data: bytes) -> None:
            raw.get_blob_client(ref.uri.removeprefix(home)).upload_blob(data, overwrite=True)

        store = _azure_store(endpoint, name)
        try:
            yield Harness(store, upload_behind)
        finally:
            await store.close()
    else:
        memory = InMemoryBlobStore()

        def poke_dict(ref: PayloadRef, data: bytes) -> None:
            memory.blobs[ref.uri] = data

        yield Harness(memory, poke_dict)


def _key() -> str:
    return blob_key(new_job_id())


# The contract: the same bodies for every store.


@pytest.mark.parametrize("size", [0, 1, 5 * MIB], ids=["0B", "1B", "5MiB"])
async def test_get_returns_what_put_stored_when_sizes_vary(harness: Harness, size: int):
    data = os.urandom(size)
    ref = await harness.store.put(_key(), data, "application/octet-stream")
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size == size
    assert ref.content_type == "application/octet-stream"
    assert await harness.store.get(ref) == data


@pytest.mark.parametrize(
    "tampered",
    [b"Original payload", b"original payload, longer", b""],
    ids=["same-size", "longer", "empty"],
)
async def test_get_raises_integrity_error_when_blob_was_tampered(harness: Harness, tampered: bytes):
    ref = await harness.store.put(_key(), b"original payload", "text/plain")
    harness.tamper(ref, tampered)
    with pytest.raises(BlobIntegrityError, match="its reference says"):
        await harness.store.get(ref)


async def test_get_raises_store_error_naming_uri_when_blob_is_missing(harness: Harness):
    key, other = _key(), _key()
    stored = await harness.store.put(key, b"x", "text/plain")
    missing = stored.model_copy(update={"uri": stored.uri.replace(key, other)})
    with pytest.raises(BlobStoreError, match="no blob at") as caught:
        await harness.store.get(missing)
    assert missing.uri in str(caught.value)
    assert not isinstance(caught.value, BlobIntegrityError | BlobUnavailableError)


async def test_get_raises_store_error_when_blob_was_deleted(harness: Harness):
    ref = await harness.store.put(_key(), b"payload", "text/plain")
    await harness.store.delete(ref.uri)
    with pytest.raises(BlobStoreError, match="no blob at"):
        await harness.store.get(ref)
    await harness.store.delete(ref.uri)  # deleting a missing blob is not an error


async def test_scan_lists_payload_blobs_after_the_cursor_in_key_order(harness: Harness):
    keys = sorted(_key() for _ in range(5))
    refs = {key: await harness.store.put(key, b"x", "application/json") for key in keys}
    await harness.store.put("exports/report.csv", b"y", "text/csv")  # not a payload: not listed
    first = await harness.store.scan(after="", limit=3)
    rest = await harness.store.scan(after=first[-1].key, limit=3)
    listed = first + rest
    assert [blob.key for blob in listed] == keys
    assert [blob.uri for blob in listed] == [refs[key].uri for key in keys]
    assert [blob.job_id for blob in listed] == [key.rpartition("/")[2] for key in keys]
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=5) < blob.written_at <= now for blob in listed)
    assert await harness.store.scan(after=keys[-1], limit=3) == []


async def test_all_blobs_are_retrievable_when_put_concurrently(harness: Harness):
    blobs = {_key(): os.urandom(1000 + i) for i in range(20)}
    refs = await asyncio.gather(
        *(harness.store.put(key, data, "application/octet-stream") for key, data in blobs.items())
    )
    got = await asyncio.gather(*(harness.store.get(ref) for ref in refs))
    assert got == list(blobs.values())
    assert len({ref.uri for ref in refs}) == 20


@pytest.mark.parametrize("key", ["../escape", "/abs/key", "a/../b", ".tmp-x", "a//b", "a/", ""])
async def test_put_raises_store_error_when_key_is_not_a_plain_path(harness: Harness, key: str):
    with pytest.raises(BlobStoreError, match="not a plain relative path"):
        await harness.store.put(key, b"x", "text/plain")


async def test_get_raises_store_error_when_ref_belongs_to_another_store(harness: Harness):
    foreign = PayloadRef(uri="https://example.com/blob", sha256="0" * 64, size=0)
    with pytest.raises(BlobStoreError):
        await harness.store.get(foreign)


async def test_ping_returns_when_store_is_usable(harness: Harness):
    await harness.store.ping()


# The local directory.


def _ref_to(path: Path) -> PayloadRef:
    data = path.read_bytes()
    return PayloadRef(uri=path.as_uri(), sha256=hashlib.sha256(data).hexdigest(), size=len(data))


@pytest.mark.parametrize(
    "uri_of",
    [
        lambda root, outside: f"{root.as_uri()}/../{outside.name}",
        lambda root, outside: outside.as_uri(),
        lambda root, outside: f"file://otherhost{outside}",
        lambda root, outside: root.as_uri(),
    ],
    ids=["dot-dot", "absolute", "host", "root-itself"],
)
async def test_local_store_refuses_ref_when_uri_escapes_root(tmp_path: Path, uri_of):
    root = tmp_path / "blobs"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    store = LocalDirBlobStore(root)
    # A ref that would verify if it were followed, so only the root check can stop it.
    ref = _ref_to(outside).model_copy(update={"uri": uri_of(root, outside)})
    with pytest.raises(BlobStoreError):
        await store.get(ref)
    with pytest.raises(BlobStoreError):
        await store.delete(ref.uri)
    assert outside.read_bytes() == b"not yours"


async def test_local_store_refuses_ref_when_symlink_leads_out_of_root(tmp_path: Path):
    root = tmp_path / "blobs"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    (root / "link").symlink_to(outside)
    ref = _ref_to(outside).model_copy(update={"uri": (root / "link").as_uri()})
    with pytest.raises(BlobStoreError, match="outside the blob directory"):
        await LocalDirBlobStore(root).get(ref)


async def test_local_put_leaves_only_the_blob_when_write_completes(tmp_path: Path):
    store = LocalDirBlobStore(tmp_path)
    ref = await store.put("a/b", b"data", "text/plain")
    assert ref.uri == (tmp_path / "a" / "b").resolve().as_uri()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


async def test_local_ping_raises_store_error_when_root_is_a_file(tmp_path: Path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(BlobStoreError):
        await LocalDirBlobStore(tmp_path / "file").ping()


# S3.


async def test_s3_object_carries_sha256_checksum_and_content_type_when_put(s3_endpoint, s3_bucket):
    client, bucket = s3_bucket
    store = _s3_store(s3_endpoint, bucket)
    try:
        ref = await store.put("a/b", b"payload", "text/plain")
    finally:
        await store.close()
    head = client.head_object(Bucket=bucket, Key="taskq/a/b", ChecksumMode="ENABLED")
    assert ref.uri == f"s3://{bucket}/taskq/a/b"
    assert head["ContentType"] == "text/plain"
    assert bytes.fromhex(ref.sha256) == base64.b64decode(head["ChecksumSHA256"])


@pytest.mark.parametrize(
    "uri",
    ["s3://other-bucket/taskq/a/b", "s3://{bucket}/elsewhere/a/b", "s3://{bucket}/taskq/../a"],
    ids=["other-bucket", "outside-prefix", "dot-dot"],
)
async def test_s3_store_refuses_ref_when_it_is_not_under_bucket_and_prefix(
    s3_endpoint, s3_bucket, uri: str
):
    _, bucket = s3_bucket
    store = _s3_store(s3_endpoint, bucket)
    ref = PayloadRef(uri=uri.format(bucket=bucket), sha256="0" * 64, size=0)
    try:
        with pytest.raises(BlobStoreError, match="refusing it"):
            await store.get(ref)
        with pytest.raises(BlobStoreError, match="refusing it"):
            await store.delete(ref.uri)
    finally:
        await store.close()


async def test_s3_ping_raises_store_error_when_bucket_is_missing(s3_endpoint):
    store = _s3_store(s3_endpoint, f"taskq-missing-{uuid.uuid4().hex[:8]}")
    try:
        with pytest.raises(BlobStoreError, match="does not exist") as caught:
            await store.ping()
        assert not isinstance(caught.value, BlobUnavailableError)
    finally:
        await store.close()


async def test_s3_store_raises_unavailable_within_seconds_when_endpoint_is_dead():
    store = _s3_store("http://127.0.0.1:1", "taskq-dead")
    ref = PayloadRef(uri="s3://taskq-dead/taskq/a/b", sha256="0" * 64, size=0)
    calls = [
        store.ping,
        lambda: store.put("a/b", b"x", "text/plain"),
        lambda: store.get(ref),
        lambda: store.delete(ref.uri),
    ]
    try:
        for call in calls:
            started = time.monotonic()
            with pytest.raises(BlobUnavailableError, match="unreachable"):
                async with asyncio.timeout(10):
                    await call()
            assert time.monotonic() - started < 5
    finally:
        await store.close()


# Cloud Storage and Blob Storage.


async def test_gcs_object_carries_its_content_type_when_put(gcs_endpoint, gcs_bucket):
    raw, name = gcs_bucket
    store = GcsBlobStore(name, endpoint_url=gcs_endpoint)
    try:
        ref = await store.put("a/b", b"hello", "text/plain")
    finally:
        await store.close()
    assert ref.uri == f"gs://{name}/taskq/a/b"
    assert raw.get_blob("taskq/a/b").content_type == "text/plain"


async def test_azure_blob_carries_its_content_type_when_put(azurite_endpoint, azure_container):
    raw, name = azure_container
    store = _azure_store(azurite_endpoint, name, prefix="jobs/x")
    try:
        ref = await store.put("a/b", b"hello", "text/plain")
    finally:
        await store.close()
    assert ref.uri == f"azblob://{AZURITE_ACCOUNT}/{name}/jobs/x/a/b"
    properties = raw.get_blob_client("jobs/x/a/b").get_blob_properties()
    assert properties.content_settings.content_type == "text/plain"


async def test_cloud_ping_raises_store_error_naming_what_is_missing(gcs_endpoint, azurite_endpoint):
    missing = f"taskq-missing-{uuid.uuid4().hex[:8]}"
    for store, what in (
        (GcsBlobStore(missing, endpoint_url=gcs_endpoint), "bucket"),
        (_azure_store(azurite_endpoint, missing), "container"),
    ):
        try:
            with pytest.raises(
                BlobStoreError, match=f"{what} '{missing}' does not exist"
            ) as caught:
                await store.ping()
            assert not isinstance(caught.value, BlobUnavailableError)
        finally:
            await store.close()


async def test_cloud_stores_raise_unavailable_within_seconds_when_endpoint_is_dead():
    stores = [
        GcsBlobStore("taskq-dead", endpoint_url="http://127.0.0.1:1"),
        _azure_store("http://127.0.0.1:1/devstoreaccount1", "taskq-dead"),
    ]

    async def timed(call) -> float:
        started = time.monotonic()
        with pytest.raises(BlobUnavailableError):
            async with asyncio.timeout(15):
                await call()
        return time.monotonic() - started

    calls = []
    for store in stores:
        ref = PayloadRef(uri=f"{store._uri(store.prefix)}a/b", sha256="0" * 64, size=1)
        calls += [
            store.ping,
            partial(store.put, "a/b", b"x", "text/plain"),
            partial(store.get, ref),
        ]
    try:
        # At once: each waits out its client's few retries.
        took = await asyncio.gather(*(timed(call) for call in calls))
    finally:
        for store in stores:
            await store.close()
    assert max(took) < 10, took


# The in-memory twin.


async def test_memory_store_raises_fail_with_when_it_is_set():
    store = InMemoryBlobStore()
    store.fail_with = BlobUnavailableError("down")
    with pytest.raises(BlobUnavailableError):
        await store.put("a", b"x", "text/plain")
    with pytest.raises(BlobUnavailableError):
        await store.ping()


# Keys and URLs.


def test_blob_key_fans_out_over_two_hex_characters_when_given_a_job_id():
    job_id = new_job_id()
    key = blob_key(job_id)
    assert key == blob_key(job_id)
    assert key == f"payloads/{hashlib.sha256(job_id.encode()).hexdigest()[:2]}/{job_id}"


@pytest.mark.parametrize("job_id", ["../x", "a/b", "", ".x", "x" * 200])
def test_blob_key_raises_value_error_when_job_id_is_not_plain(job_id: str):
    with pytest.raises(ValueError, match="not a plain id"):
        blob_key(job_id)


def test_open_blob_store_returns_local_store_when_url_is_absolute_file(tmp_path: Path):
    store = open_blob_store(tmp_path.as_uri())
    assert isinstance(store, LocalDirBlobStore)
    assert store.root == tmp_path.resolve()


def test_open_blob_store_resolves_against_cwd_when_file_url_is_relative(
    tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    store = open_blob_store("file:.taskq/blobs")
    assert isinstance(store, LocalDirBlobStore)
    assert store.root == (tmp_path / ".taskq" / "blobs").resolve()


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("s3://my-bucket/some/prefix", "some/prefix/"),
        ("s3://my-bucket/p/", "p/"),
        ("s3://my-bucket", ""),
    ],
)
async def test_open_blob_store_returns_s3_store_when_url_is_s3(url: str, prefix: str):
    store = open_blob_store(url, endpoint_url="http://127.0.0.1:1", access_key="k", secret_key="s")
    try:
        assert isinstance(store, S3BlobStore)
        assert (store.bucket, store.prefix) == ("my-bucket", prefix)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "kind", "where"),
    [
        ("gs://my-bucket/some/prefix", GcsBlobStore, ("my-bucket", "some/prefix/")),
        ("gs://my-bucket", GcsBlobStore, ("my-bucket", "")),
        ("azblob://acct1/payloads/taskq", AzureBlobStore, ("payloads", "taskq/")),
        ("azblob://acct1/payloads", AzureBlobStore, ("payloads", "")),
    ],
)
async def test_open_blob_store_returns_the_cloud_store_its_scheme_names(url, kind, where):
    store = open_blob_store(url, cloud_endpoint_url="http://127.0.0.1:1", azure_key=AZURITE_KEY)
    try:
        assert isinstance(store, kind)
        holder = store.bucket if isinstance(store, GcsBlobStore) else store.container
        assert (holder, store.prefix) == where
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "",
        "/plain/path",
        "file://host/dir",
        "file:",
        "s3://B",
        "s3://",
        "s3://bkt/a/../b",
        "gs://B",
        "gs://bkt/a/../b",
        "azblob://Acct/c",
        "azblob://acct1",
        "azblob://acct1/payloads/a/../b",
    ],
)
def test_open_blob_store_raises_settings_error_naming_variable_when_url_is_bad(url: str):
    with pytest.raises(SettingsError, match="TASKQ_BLOB_URL"):
        open_blob_store(url)


@pytest.mark.parametrize(
    "url",
    ["ftp://user:hunter2@example.com/x", "s3://key:hunter2@bucket/p", "file://u:hunter2@h/dir"],
)
def test_open_blob_store_hides_password_when_url_is_rejected(url: str):
    with pytest.raises(SettingsError, match="TASKQ_BLOB_URL") as caught:
        open_blob_store(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("gs://bucket/p", "jobstore.gcs_blobs", "gcs"),
        ("azblob://acct1/c/p", "jobstore.azure_blobs", "azure"),
    ],
)
def test_a_cloud_store_without_its_sdk_names_the_extra_to_install(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, module, None)  # what importing it gives without the SDK
    with pytest.raises(SettingsError, match=re.escape(f"pip install 'taskq[{extra}]'")):
        open_blob_store(url)
