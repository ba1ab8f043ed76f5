"""S3 and S3-compatible backend (AWS, MinIO, Ceph): complete objects only, verified in transit, bounded retries.

Built on a boto3 client (`S3Connection.client()`; the Dagster resource fills the connection from
dagster-aws's S3Resource fields), not on s3fs, because the
writer needs what s3fs hides: a checksum the server verifies on every PUT and every part, the sha256
kept with the object so identical content is recognised by a HEAD instead of a download, and explicit
abort of a multipart upload that failed. Request retries are botocore's standard mode (exponential
backoff with jitter on throttling, 5xx and connection errors, bounded by `max_attempts`); a body that
breaks mid-download is retried here, also bounded. Reads are ranged GETs (small ones share fsspec's cached
blocks), so a Parquet file streams, column by column, and is never downloaded whole.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import functools
import hashlib
import os
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Literal
from urllib.parse import urlsplit

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from clip_assets.storage.base import Lease, ObjectInfo, StorageError
from clip_assets.storage.content_types import content_type
from clip_assets.storage.keys import check_key
from clip_assets.storage.lease import ExpiringLease
from clip_assets.storage.ranged_reader import RangedReader
from clip_assets.thread_pools import shared_pool

SCHEME = "s3://"
MiB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last) and more than 10,000 parts per upload.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
SHA256_METADATA = "sha256"


@dataclass(frozen=True)
class S3Options:
    """How objects are written, read and listed; the resource fills it from configuration."""

    multipart_threshold: int = 16 * MiB
    part_size: int = 8 * MiB
    # Parts of one large object uploaded at once (objects themselves are parallel in the writer).
    part_concurrency: int = 4
    # End-to-end integrity: the server recomputes and compares before the object exists.
    checksum: Literal["sha256", "md5"] = "sha256"
    server_side_encryption: Literal["", "AES256", "aws:kms"] = ""
    sse_kms_key_id: str = ""
    # Reads smaller than a block are served from aligned blocks of this size, a few kept.
    read_block_size: int = 64 * 1024
    read_blocks_kept: int = 32
    # Attempts for a download whose body breaks after the response started (botocore retries requests,
    # not bodies).
    read_attempts: int = 5
    # Keys per listing request: S3 answers at most 1,000; some compatible stores fewer.
    list_page_size: int = 1000
    # HEADs in flight for one batch of lookups (checking a partition's recorded objects, clip ids).
    head_concurrency: int = 8

    def __post_init__(self) -> None:
        if self.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {self.part_size} is below S3's minimum of {MIN_PART_SIZE} bytes")
        if self.multipart_threshold < self.part_size:
            raise ValueError("multipart_threshold must be at least part_size")
        if self.sse_kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError("sse_kms_key_id needs server_side_encryption 'aws:kms'")


@dataclass(frozen=True)
class S3Connection:
    """How to reach S3, beyond what botocore's own chain supplies (leave a field unset to use the chain).

    The secrets are never part of the repr, so a connection can be logged or shown without them.
    """

    profile_name: str | None = None
    region_name: str | None = None
    endpoint_url: str | None = None
    use_ssl: bool = True
    verify: bool | str | None = None
    aws_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    aws_session_token: str | None = dataclasses.field(default=None, repr=False)
    max_attempts: int = 5
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    max_pool_connections: int = 32
    use_unsigned_session: bool = False

    def __post_init__(self) -> None:
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ValueError(f"addressing_style must be auto, path or virtual, got {self.addressing_style!r}")

    def client(self, checksum: Literal["sha256", "md5"] = "sha256") -> Any:
        """One client per distinct connection, checksum mode and AWS environment per process: clients are
        thread-safe and slow to build. The AWS_* variables botocore reads (endpoint, region, profile,
        credentials) are part of the cache key, so a changed environment gets a new client rather than a
        stale one.

        In `md5` mode the client computes and asks for checksums only where S3 requires them: botocore
        (1.36+) otherwise adds a CRC32 (`x-amz-checksum-crc32`, `x-amz-sdk-checksum-algorithm`) to every
        upload, beside the Content-MD5, which a store without flexible checksums refuses."""
        aws_environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
        return _client(self, checksum, aws_environment)


@functools.lru_cache(maxsize=8)
def _client(connection: S3Connection, checksum: str, aws_environment: tuple[tuple[str, str], ...]) -> Any:
    flexible = "when_supported" if checksum == "sha256" else "when_required"
    session = boto3.session.Session(profile_name=connection.profile_name)
    return session.client(
        "s3",
        region_name=connection.region_name,
        endpoint_url=connection.endpoint_url,
        use_ssl=connection.use_ssl,
        verify=connection.verify,
        aws_access_key_id=connection.aws_access_key_id,
        aws_secret_access_key=connection.aws_secret_access_key,
        aws_session_token=connection.aws_session_token,
        config=Config(
            retries={"mode": "standard", "total_max_attempts": connection.max_attempts},
            s3={"addressing_style": connection.addressing_style},
            max_pool_connections=connection.max_pool_connections,
            request_checksum_calculation=flexible,
            response_checksum_validation=flexible,
            **({"signature_version": UNSIGNED} if connection.use_unsigned_session else {}),
        ),
    )


def open_s3(url: str, connection: S3Connection | None = None, options: S3Options | None = None) -> S3Storage:
    """The backend behind `open_storage` for `s3://bucket/prefix` URLs."""
    options = options or S3Options()
    return S3Storage((connection or S3Connection()).client(options.checksum), url, options)


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> (`bucket`, `some/prefix/`); the prefix is '' or ends with '/'."""
    if not url.startswith(SCHEME):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, prefix = url[len(SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, f"{prefix}/" if prefix else ""


def _retry_delays(attempts: int, base_s: float = 0.2, cap_s: float = 10.0) -> Iterator[float]:
    """Full-jitter exponential backoff: `attempts - 1` delays, each random up to base * 2^n (capped)."""
    for attempt in range(attempts - 1):
        yield random.uniform(0, min(cap_s, base_s * 2**attempt))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_missing(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or _error_code(exc) in {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    """An S3 bucket prefix as object storage.

    Objects only ever appear complete: a single PUT is atomic, and a multipart upload is invisible
    until it is completed (and aborted if any part fails). Every object records its sha256 in its
    metadata (`x-amz-meta-sha256`), which `stat` reports.
    """

    def __init__(self, client: Any, url: str, options: S3Options | None = None) -> None:
        self.client = client
        self.bucket, self.prefix = parse_s3_url(url)
        self.options = options or S3Options()

    @property
    def root(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}".rstrip("/")

    def object_store_options(self) -> dict[str, str]:
        """This client's endpoint, region, addressing and credentials in the `object_store` crate's terms
        (what Lance's `storage_options` take), so a table under this root is reached exactly as the
        files are. The values include secrets: pass them on, never log them."""
        meta = self.client.meta
        options = {"aws_region": meta.region_name or "us-east-1"}
        endpoint = meta.endpoint_url or ""
        # botocore always resolves an endpoint; AWS's own is left to object_store (virtual-hosted, by region).
        custom = bool(endpoint) and not (urlsplit(endpoint).hostname or "").endswith(".amazonaws.com")
        if custom:
            options["aws_endpoint"] = endpoint
            options["allow_http"] = str(endpoint.startswith("http://")).lower()
        style = (meta.config.s3 or {}).get("addressing_style", "auto")
        virtual = style == "virtual" or (style == "auto" and not custom)
        options["aws_virtual_hosted_style_request"] = str(virtual).lower()
        credentials = self.client._get_credentials()
        if credentials is None:
            options["aws_skip_signature"] = "true"
            return options
        frozen = credentials.get_frozen_credentials()
        options["aws_access_key_id"] = frozen.access_key
        options["aws_secret_access_key"] = frozen.secret_key
        if frozen.token:
            options["aws_session_token"] = frozen.token
        return options

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        code = errno.EIO
        if isinstance(exc, ClientError):
            reason = f"{_error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
            code = errno.ENOENT if _is_missing(exc) else code
        else:
            reason = str(exc) or type(exc).__name__
        return StorageError(code, f"cannot {action} {self.root}/{key}: {reason}")

    # Writing

    def _write_arguments(self, key: str, sha256: str) -> dict[str, Any]:
        arguments: dict[str, Any] = {"Metadata": {SHA256_METADATA: sha256}}
        stored_type = content_type(key)
        if stored_type:
            arguments["ContentType"] = stored_type
        if self.options.server_side_encryption:
            arguments["ServerSideEncryption"] = self.options.server_side_encryption
        if self.options.sse_kms_key_id:
            arguments["SSEKMSKeyId"] = self.options.sse_kms_key_id
        return arguments

    def _checksum(self, data: bytes | memoryview, sha256: bytes | None = None) -> dict[str, str]:
        """What the server recomputes before it accepts the bytes (the algorithm header makes it keep it)."""
        if self.options.checksum == "md5":
            return {"ContentMD5": _b64(hashlib.md5(data, usedforsecurity=False).digest())}
        return {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(sha256 or hashlib.sha256(data).digest())}

    def put(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo:
        info = self._write(key, data, sha256, {})
        assert info is not None
        return info

    def put_if_absent(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo | None:
        """A conditional PUT (`If-None-Match: *`): one request when the key is new, and None, with
        nothing replaced, when something is there already. A large object carries the condition on its
        `CompleteMultipartUpload`, so of two writers racing for one key exactly one completes; a HEAD
        first spares the upload when the key is plainly taken. Stores that ignore the condition simply
        overwrite."""
        return self._write(key, data, sha256, {"IfNoneMatch": "*"})

    def put_if_match(self, key: str, data: bytes | memoryview, etag: str) -> ObjectInfo | None:
        """Replace the object only if it is still the version `etag` names; None when it is not (or gone)."""
        return self._write(key, data, None, {"IfMatch": f'"{etag}"'})

    def _write(
        self, key: str, data: bytes | memoryview, sha256: str | None, condition: dict[str, str]
    ) -> ObjectInfo | None:
        digest = bytes.fromhex(sha256) if sha256 else hashlib.sha256(data).digest()
        try:
            if len(data) >= self.options.multipart_threshold:
                if condition and not self._condition_holds(key, condition):
                    return None
                etag = self._put_multipart(key, data, digest, condition)
            else:
                response = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=bytes(data),  # botocore sends bytes; a view (of the input's batch) is copied once here
                    **condition,
                    **self._checksum(data, digest),
                    **self._write_arguments(key, digest.hex()),
                )
                etag = response["ETag"]
        except ClientError as exc:
            if condition and _error_code(exc) in {"PreconditionFailed", "412", "NoSuchKey", "404"}:
                return None
            raise self._fail("write", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("write", key, exc) from exc
        return ObjectInfo(key, len(data), time.time_ns(), etag.strip('"'), digest.hex())

    def _condition_holds(self, key: str, condition: dict[str, str]) -> bool:
        """A PUT condition checked with a HEAD before a multipart upload: spares an upload that would be
        refused. Only a hint (another writer may act between it and the complete, which carries the
        condition itself and so decides)."""
        current = self.stat(key)
        if "IfNoneMatch" in condition:
            return current is None
        return current is not None and f'"{current.etag}"' == condition["IfMatch"]

    def _part_size(self, size: int) -> int:
        """The configured part size, grown when needed to stay within S3's 10,000 parts."""
        part_size = self.options.part_size
        while -(-size // part_size) > MAX_PARTS:
            part_size *= 2
        return part_size

    def _put_multipart(self, key: str, data: bytes | memoryview, digest: bytes, condition: dict[str, str]) -> str:
        """Parts on a bounded pool, then one `CompleteMultipartUpload` carrying the write's condition
        (`If-None-Match` / `If-Match`), which the server checks atomically as the object appears."""
        full_key = self._key(key)
        view = memoryview(data)
        part_size = self._part_size(len(data))
        arguments = self._write_arguments(key, digest.hex())
        if self.options.checksum == "sha256":
            arguments["ChecksumAlgorithm"] = "SHA256"
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key, **arguments)["UploadId"]

        def upload_part(number: int) -> dict[str, Any]:
            chunk = view[(number - 1) * part_size : number * part_size]
            checksum = self._checksum(chunk)
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(chunk),
                **checksum,
            )
            part = {"PartNumber": number, "ETag": response["ETag"]}
            if "ChecksumSHA256" in checksum:
                part["ChecksumSHA256"] = checksum["ChecksumSHA256"]
            return part

        count = -(-len(data) // part_size)
        try:
            workers = max(1, min(self.options.part_concurrency, count))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-part") as pool:
                parts = list(pool.map(upload_part, range(1, count + 1)))
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full_key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition
            )
        except BaseException as failure:
            # An unfinished upload is invisible but billed; never leave one behind on purpose.
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)
            except (ClientError, BotoCoreError) as secondary:
                failure.add_note(f"aborting upload {upload_id} failed too ({secondary}); remove_abandoned will")
            raise
        return str(response["ETag"])

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", key, exc) from exc

    def remove_abandoned(self, older_than_s: float) -> int:
        """Abort multipart uploads under the prefix that a killed writer never completed nor aborted."""
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("clean unfinished uploads under", "", exc) from exc
        return removed

    # Reading

    def _get(self, key: str, byte_range: str | None = None, etag: str | None = None) -> tuple[bytes, str] | None:
        """One object (or a range of it) and its ETag; None when there is no such object.

        The request is retried by botocore; a body that breaks after the response started is not,
        so it is fetched again here, a bounded number of times.
        """
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if byte_range:
            arguments["Range"] = byte_range
        if etag:
            # Pins every range to the version opened: a file replaced mid-read fails (412), it never
            # yields a mix of two versions.
            arguments["IfMatch"] = f'"{etag}"'
        delays = _retry_delays(self.options.read_attempts)
        while True:
            try:
                response = self.client.get_object(**arguments)
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                if etag and _error_code(exc) in {"PreconditionFailed", "412"}:
                    message = f"cannot read {self.root}/{key}: it changed while being read; run again"
                    raise StorageError(errno.ESTALE, message) from exc
                raise self._fail("read", key, exc) from exc
            except BotoCoreError as exc:
                raise self._fail("read", key, exc) from exc
            try:
                return bytes(response["Body"].read()), str(response["ETag"]).strip('"')
            except (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, OSError) as exc:
                delay = next(delays, None)
                if delay is None:
                    raise self._fail("read", key, exc) from exc
                time.sleep(delay)

    def read(self, key: str) -> bytes:
        found = self._get(key)
        if found is None:
            raise StorageError(errno.ENOENT, f"cannot read {self.root}/{key}: no such object")
        return found[0]

    def read_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and the ETag of exactly that version; None when there is no such object."""
        return self._get(key)

    def delete_if_match(self, key: str, etag: str) -> None:
        """Delete the object only if it is still the version `etag` names (conditional DELETE).

        A store without conditional deletes (LocalStack 4.13 answers 501 NotImplemented) gets a HEAD and a
        plain DELETE when the ETag still matches: the only caller releases a lease it holds, which nobody
        else may take before it expires, so the gap between the two requests is harmless there, while
        leaving the lease would make the partition's next writer wait for it to expire."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=f'"{etag}"')
        except ClientError as exc:
            if _error_code(exc) in {"NotImplemented", "501"}:
                found = self.stat(key)
                if found is not None and found.etag == etag:
                    self.delete(key)
            elif _error_code(exc) not in {"PreconditionFailed", "412", "NoSuchKey", "404"}:
                raise self._fail("delete", key, exc) from exc
        except BotoCoreError as exc:
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
            found = self._get(key, f"bytes={start}-{end - 1}", info.etag)
            if found is None:
                raise StorageError(errno.ENOENT, f"cannot read {self.root}/{key}: deleted while being read")
            return found[0]

        options = self.options
        return RangedReader(fetch, info.size, options.read_block_size, options.read_blocks_kept)  # type: ignore[return-value]

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._fail("stat", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("stat", key, exc) from exc
        return ObjectInfo(
            key,
            int(head["ContentLength"]),
            _ns(head["LastModified"]),
            str(head["ETag"]).strip('"'),
            head.get("Metadata", {}).get(SHA256_METADATA),
        )

    def stat_many(self, keys: Sequence[str]) -> list[ObjectInfo | None]:
        return list(shared_pool(self.options.head_concurrency).map(self.stat, keys))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=self.prefix + prefix,
                PaginationConfig={"PageSize": self.options.list_page_size},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    yield ObjectInfo(key, int(item["Size"]), _ns(item["LastModified"]), str(item["ETag"]).strip('"'))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from exc
