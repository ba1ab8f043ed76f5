"""Google Cloud Storage backend (`gs://bucket/prefix`): complete objects only, verified in transit, bounded retries.

Built on `google-cloud-storage`, for what the writer needs from the JSON API: a crc32c (or MD5) in the
object resource sent with the bytes, which the service checks before the object exists; the sha256
kept in the object's metadata so a metadata GET proves identity; resumable uploads for large objects,
which create the object only when the last chunk arrives; and generations, GCS's version numbers:
`ifGenerationMatch=0` creates only if absent, `ifGenerationMatch=N` replaces only generation N, so the
generation plays the part of S3's ETag in `ConditionalWrites`.

Credentials are Application Default Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud login,
the metadata server); `STORAGE_EMULATOR_HOST` points the client at an emulator, without credentials.
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import io
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Literal

from clip_assets.storage.base import Lease, ObjectInfo, StorageError
from clip_assets.storage.content_types import DEFAULT, content_type
from clip_assets.storage.keys import check_key
from clip_assets.storage.lease import ExpiringLease
from clip_assets.storage.ranged_reader import RangedReader
from clip_assets.thread_pools import shared_pool

SCHEME = "gs://"
EMULATOR_VAR = "STORAGE_EMULATOR_HOST"
MiB = 1024 * 1024
# Resumable chunks must be multiples of 256 KiB. The client library sends objects up to 8 MiB in one
# multipart request and larger ones as resumable uploads (its `_MAX_MULTIPART_SIZE`).
CHUNK_QUANTUM = 256 * 1024
SINGLE_REQUEST_LIMIT = 8 * MiB
SHA256_METADATA = "sha256"


@dataclass(frozen=True)
class GcsConnection:
    """How to reach GCS beyond Application Default Credentials: the project (only for creating buckets;
    unset: the credentials' own) and how long a request is retried (exponential backoff with jitter on
    429, 5xx and broken connections, given up after `gcs_retry_deadline_s`)."""

    gcs_project: str | None = None
    gcs_retry_deadline_s: float = 60.0

    def __post_init__(self) -> None:
        if self.gcs_retry_deadline_s <= 0:
            raise ValueError(f"gcs_retry_deadline_s must be positive, got {self.gcs_retry_deadline_s}")

    def client(self) -> Any:
        """One client per connection and Google environment per process; a changed environment
        (`STORAGE_EMULATOR_HOST`, `GOOGLE_*`) gets a new one."""
        environment = tuple(
            sorted((k, v) for k, v in os.environ.items() if k.startswith("GOOGLE_") or k == EMULATOR_VAR)
        )
        return _client(self.gcs_project, environment)

    def retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_deadline(self.gcs_retry_deadline_s).with_delay(initial=0.2, maximum=10.0)


@dataclass(frozen=True)
class GcsOptions:
    """How objects are written and read."""

    # Resumable uploads (objects above 8 MiB) send chunks of this size, a multiple of 256 KiB.
    gcs_chunk_size: int = 8 * MiB
    # What the service verifies on every upload: crc32c (GCS's own) or md5.
    gcs_checksum: Literal["crc32c", "md5"] = "crc32c"
    gcs_read_block_size: int = 64 * 1024
    gcs_read_blocks_kept: int = 32
    gcs_list_page_size: int = 1000
    gcs_head_concurrency: int = 8

    def __post_init__(self) -> None:
        if self.gcs_chunk_size <= 0 or self.gcs_chunk_size % CHUNK_QUANTUM:
            raise ValueError(f"gcs_chunk_size {self.gcs_chunk_size} is not a positive multiple of 256 KiB")


@functools.lru_cache(maxsize=8)
def _client(project: str | None, environment: tuple[tuple[str, str], ...]) -> Any:
    from google.cloud import storage

    emulator = dict(environment).get(EMULATOR_VAR, "")
    if emulator and "://" not in emulator:
        # `host:port`, as emulators' own docs spell it: the client library would send requests to no scheme.
        return storage.Client(project=project, client_options={"api_endpoint": f"http://{emulator}"})
    return storage.Client(project=project)


def open_gcs(url: str, connection: GcsConnection | None = None, options: GcsOptions | None = None) -> GcsStorage:
    """The backend behind `open_storage` for `gs://bucket/prefix` URLs."""
    connection = connection or GcsConnection()
    return GcsStorage(connection.client(), url, options, connection.retry())


def parse_gcs_url(url: str) -> tuple[str, str]:
    """`gs://bucket/some/prefix/` -> (`bucket`, `some/prefix/`); the prefix is '' or ends with '/'."""
    if not url.lower().startswith(SCHEME):
        raise ValueError(f"{url!r} is not a gs:// URL")
    bucket, _, prefix = url[len(SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, f"{prefix}/" if prefix else ""


def _ns(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1_000_000_000) if moment else time.time_ns()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class GcsStorage:
    """A GCS bucket prefix as object storage.

    Objects only ever appear complete: a single upload is atomic, and a resumable upload creates the
    object only when its last chunk is in. Every object records its sha256 in its metadata, which
    `stat` reports; its generation is the version tag of `ObjectInfo.etag`.
    """

    def __init__(self, client: Any, url: str, options: GcsOptions | None = None, retry: Any = None) -> None:
        self.client = client
        self.bucket_name, self.prefix = parse_gcs_url(url)
        self.options = options or GcsOptions()
        self.retry = retry if retry is not None else GcsConnection().retry()
        self._bucket = client.bucket(self.bucket_name)

    @property
    def root(self) -> str:
        return f"{SCHEME}{self.bucket_name}/{self.prefix}".rstrip("/")

    def object_store_options(self) -> dict[str, str]:
        """This client's endpoint and credentials in the `object_store` crate's terms (Lance's
        `storage_options`): an emulator's URL, or a bearer token of the client's own credentials, so
        Lance never looks for credentials of its own. The values include secrets: never log them."""
        from google.auth.credentials import AnonymousCredentials
        from google.auth.transport.requests import Request

        options: dict[str, str] = {}
        endpoint = os.environ.get(EMULATOR_VAR)
        if endpoint:
            # The client library reads `host:port` as http://host:port; object_store needs the scheme.
            endpoint = endpoint if "://" in endpoint else f"http://{endpoint}"
            options["google_base_url"] = endpoint.rstrip("/")
            options["allow_http"] = str(endpoint.startswith("http://")).lower()
        credentials = self.client._credentials
        if isinstance(credentials, AnonymousCredentials):
            options["google_skip_signature"] = "true"
            # A token of no account: object_store then asks no metadata server for one.
            options["google_storage_token"] = "anonymous"
            return options
        if not credentials.valid:
            credentials.refresh(Request())
        options["google_storage_token"] = credentials.token
        return options

    def _blob(self, key: str, generation: int | None = None) -> Any:
        return self._bucket.blob(self.prefix + check_key(key), generation=generation)

    def _fail(self, action: str, key: str, exc: BaseException) -> StorageError:
        from google.api_core.exceptions import NotFound

        code = errno.ENOENT if isinstance(exc, NotFound) else errno.EIO
        return StorageError(code, f"cannot {action} {self.root}/{key}: {_reason(exc)}")

    # Writing

    def put(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo:
        info = self._write(key, data, sha256, None)
        assert info is not None
        return info

    def put_if_absent(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo | None:
        """An upload with `ifGenerationMatch=0`: of two writers racing for one key exactly one creates it;
        None, with nothing replaced, when the key exists. A resumable upload carries the condition from
        its start and the service checks it as the object appears; a metadata GET first spares the
        upload when the key is plainly taken."""
        return self._write(key, data, sha256, 0)

    def put_if_match(self, key: str, data: bytes | memoryview, etag: str) -> ObjectInfo | None:
        """Replace the object only if it is still generation `etag`; None when it is not (or gone)."""
        return self._write(key, data, None, int(etag))

    def _write(
        self, key: str, data: bytes | memoryview, sha256: str | None, generation: int | None
    ) -> ObjectInfo | None:
        """`generation` is None (any), 0 (only if absent) or the generation to replace."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        digest = sha256 or hashlib.sha256(data).hexdigest()
        large = len(data) > SINGLE_REQUEST_LIMIT
        if large and generation is not None and not self._condition_holds(key, generation):
            return None
        blob = self._blob(key)
        blob.chunk_size = self.options.gcs_chunk_size
        blob.metadata = {SHA256_METADATA: digest}
        checksum = self.options.gcs_checksum
        sent = _crc32c(data) if checksum == "crc32c" else _b64(hashlib.md5(data, usedforsecurity=False).digest())
        extra: dict[str, Any] = {}
        if large and checksum == "crc32c":
            # In the resumable upload's first request: the service checks the whole object against it.
            extra["crc32c_checksum_value"] = sent
        elif large:
            blob.md5_hash = sent
        try:
            blob.upload_from_file(
                io.BytesIO(data),
                size=len(data),
                content_type=content_type(key) or DEFAULT,
                if_generation_match=generation,
                checksum=checksum,
                retry=self.retry,
                **extra,
            )
        except (PreconditionFailed, NotFound) as exc:
            if generation is not None:
                return None
            raise self._fail("write", key, exc) from exc
        except _failures() as exc:
            raise self._fail("write", key, exc) from exc
        stored = blob.crc32c if checksum == "crc32c" else blob.md5_hash
        if stored is not None and stored != sent:
            self.delete_if_match(key, str(blob.generation))
            raise StorageError(
                errno.EIO,
                f"cannot write {self.root}/{key}: the store kept a {checksum} of {stored}, not the {sent} "
                "sent (the bytes were damaged on the way); the object was removed, run again",
            )
        return ObjectInfo(key, len(data), _ns(blob.updated), str(blob.generation), digest)

    def _condition_holds(self, key: str, generation: int) -> bool:
        """A write's condition checked before a resumable upload: only a hint, since the upload carries
        the condition itself and so decides."""
        current = self.stat(key)
        if generation == 0:
            return current is None
        return current is not None and current.etag == str(generation)

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self._blob(key).delete(retry=self.retry)
        except NotFound:
            pass
        except _failures() as exc:
            raise self._fail("delete", key, exc) from exc

    def remove_abandoned(self, older_than_s: float) -> int:
        """Nothing to remove: a killed writer leaves at most an unfinished resumable upload, which no
        listing or read shows and which the service drops itself a week after it started."""
        return 0

    # Reading

    def _get(
        self, key: str, start: int | None = None, end: int | None = None, generation: str | None = None
    ) -> tuple[bytes, str] | None:
        """One object (or bytes start..end-1 of it) and its generation; None when there is none. A whole
        object is checked against its crc32c by the client library; a read pinned to a generation fails
        if that generation was replaced, never yielding a mix of two versions."""
        from google.api_core.exceptions import NotFound

        blob = self._blob(key, int(generation) if generation else None)
        try:
            if start is None:
                data = blob.download_as_bytes(retry=self.retry)
            else:
                assert end is not None
                data = blob.download_as_bytes(start=start, end=end - 1, checksum=None, retry=self.retry)
        except NotFound as exc:
            if generation:
                message = f"cannot read {self.root}/{key}: it changed while being read; run again"
                raise StorageError(errno.ESTALE, message) from exc
            return None
        except _failures() as exc:
            raise self._fail("read", key, exc) from exc
        return bytes(data), str(blob.generation)

    def read(self, key: str) -> bytes:
        found = self._get(key)
        if found is None:
            raise StorageError(errno.ENOENT, f"cannot read {self.root}/{key}: no such object")
        return found[0]

    def read_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and exactly that version's generation (from the download's own headers)."""
        return self._get(key)

    def delete_if_match(self, key: str, etag: str) -> None:
        """Delete the object only if it is still generation `etag`; otherwise leave it."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self._blob(key).delete(if_generation_match=int(etag), retry=self.retry)
        except (PreconditionFailed, NotFound):
            pass
        except _failures() as exc:
            raise self._fail("delete", key, exc) from exc

    @contextmanager
    def lock(self, key: str, timeout_s: float) -> Iterator[Lease]:
        lease = ExpiringLease(self, key)
        lease.acquire(timeout_s)
        try:
            yield lease
        finally:
            lease.release()

    def open(self, key: str) -> BinaryIO:
        info = self.stat(key)
        if info is None:
            raise StorageError(errno.ENOENT, f"cannot open {self.root}/{key}: no such object")

        def fetch(start: int, end: int) -> bytes:
            found = self._get(key, start, end, info.etag)
            assert found is not None  # a pinned read of a missing generation raises
            return found[0]

        options = self.options
        return RangedReader(fetch, info.size, options.gcs_read_block_size, options.gcs_read_blocks_kept)  # type: ignore[return-value]

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            blob = self._bucket.get_blob(self.prefix + check_key(key), retry=self.retry)
        except _failures() as exc:
            raise self._fail("stat", key, exc) from exc
        if blob is None:
            return None
        return ObjectInfo(
            key, int(blob.size), _ns(blob.updated), str(blob.generation), (blob.metadata or {}).get(SHA256_METADATA)
        )

    def stat_many(self, keys: Sequence[str]) -> list[ObjectInfo | None]:
        return list(shared_pool(self.options.gcs_head_concurrency).map(self.stat, keys))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            pages = self.client.list_blobs(
                self.bucket_name,
                prefix=self.prefix + prefix,
                page_size=self.options.gcs_list_page_size,
                retry=self.retry,
            )
            for blob in pages:
                key = blob.name[len(self.prefix) :]
                yield ObjectInfo(key, int(blob.size), _ns(blob.updated), str(blob.generation))
        except _failures() as exc:
            raise self._fail("list", prefix, exc) from exc


def _failures() -> tuple[type[BaseException], ...]:
    """What a request that failed raises: the API's errors, the client library's answer to a bad status
    (bare, or as the last of the retries), a broken transport, a checksum that did not match."""
    from google.api_core.exceptions import GoogleAPICallError, RetryError
    from google.auth.exceptions import TransportError
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

    return (GoogleAPICallError, RetryError, TransportError, InvalidResponse, DataCorruption, OSError)


def _crc32c(data: bytes | memoryview) -> str:
    import google_crc32c

    return _b64(google_crc32c.value(bytes(data)).to_bytes(4, "big"))


def _reason(exc: BaseException) -> str:
    """The service's status and message, on one line (the last attempt's, when retries ran out)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{_reason(cause)} (retried for {getattr(exc, 'message', '').split(',')[0].lower()})"
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return f"{status} {getattr(response, 'reason', '') or 'error'}"
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "message", "") or exc).strip().splitlines()
    first = message[0] if message else type(exc).__name__
    return f"{int(code)} {first}" if isinstance(code, int) and str(code) not in first else first
