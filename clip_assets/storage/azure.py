"""Azure Blob Storage backend (`az://container/prefix`, `abfs://` and `abfss://` read the same way): complete
blobs only, verified in transit, bounded retries.

Built on `azure-storage-blob` rather than fsspec's adlfs or `obstore`, for the same reasons the S3 backend
uses boto3: the writer needs a Content-MD5 the service verifies on every Put Blob and Put Block, the sha256
kept in the blob's metadata so a HEAD proves identity, staged blocks committed by one Put Block List that
carries the write's condition (`If-None-Match: *` / `If-Match`), and the ETag of exactly the version read.
obstore gives conditional puts too, but hides the block list (a condition there is checked by a
single-request put or by its own multipart completion, without the per-block MD5 this writer asks for).

Credentials come from the standard chain: `AZURE_STORAGE_CONNECTION_STRING` (what Azurite and most
deployments use), else an account URL (`azure_account_url`, or `AZURE_STORAGE_ACCOUNT_NAME`) with
azure-identity's `DefaultAzureCredential` (environment, workload or managed identity, the Azure CLI).
"""

from __future__ import annotations

import base64
import errno
import functools
import hashlib
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from clip_assets.storage.base import Lease, ObjectInfo, StorageError
from clip_assets.storage.content_types import DEFAULT, content_type
from clip_assets.storage.keys import check_key
from clip_assets.storage.lease import ExpiringLease
from clip_assets.storage.ranged_reader import RangedReader
from clip_assets.thread_pools import shared_pool

SCHEMES = ("az", "abfs", "abfss")
CONNECTION_STRING_VAR = "AZURE_STORAGE_CONNECTION_STRING"
ACCOUNT_NAME_VAR = "AZURE_STORAGE_ACCOUNT_NAME"
MiB = 1024 * 1024
# Azure takes at most 50,000 committed blocks per blob, and a single Put Blob of at most 5,000 MiB.
MAX_BLOCKS = 50_000
MIN_BLOCK_SIZE = 1 * MiB
MAX_SINGLE_PUT = 5000 * MiB
SHA256_METADATA = "sha256"
API_VERSION = "2025-11-05"


@dataclass(frozen=True)
class AzureConnection:
    """How to reach the storage account, beyond what the standard chain supplies.

    `azure_account_url` (`https://<account>.blob.core.windows.net`, or an emulator's
    `http://127.0.0.1:10000/devstoreaccount1`) names the account when no connection string is set; its
    credential is `DefaultAzureCredential`. Requests are retried with exponential backoff and jitter on
    timeouts, 5xx and broken connections, at most `azure_max_attempts` tries.
    """

    azure_account_url: str | None = None
    azure_max_attempts: int = 5
    # The Blob service version every request names (`x-ms-version`). Pinned a little behind the client
    # library's newest, which an emulator one release behind (Azurite) refuses; every feature used here
    # (conditional headers, Content-MD5, block lists) is years older than it.
    azure_api_version: str = API_VERSION

    def __post_init__(self) -> None:
        if self.azure_max_attempts < 1:
            raise ValueError(f"azure_max_attempts must be at least 1, got {self.azure_max_attempts}")

    def client(self) -> Any:
        """One `BlobServiceClient` per connection and Azure environment per process (clients are
        thread-safe and keep their connections); a changed AZURE_* environment gets a new one."""
        environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AZURE_")))
        return _client(self, environment)


@dataclass(frozen=True)
class AzureOptions:
    """How blobs are written and read."""

    # Blobs this large or larger are staged as blocks and committed by one Put Block List.
    azure_block_threshold: int = 16 * MiB
    azure_block_size: int = 8 * MiB
    # Blocks of one blob staged at once (blobs themselves are parallel in the writer).
    azure_block_concurrency: int = 4
    # Reads smaller than a block are served from aligned blocks of this size, a few kept.
    azure_read_block_size: int = 64 * 1024
    azure_read_blocks_kept: int = 32
    # Blobs per listing request (Azure answers at most 5,000).
    azure_list_page_size: int = 5000
    # Property requests in flight for one batch of lookups.
    azure_head_concurrency: int = 8

    def __post_init__(self) -> None:
        if self.azure_block_size < MIN_BLOCK_SIZE:
            raise ValueError(f"azure_block_size {self.azure_block_size} is below {MIN_BLOCK_SIZE} bytes")
        if self.azure_block_threshold < self.azure_block_size:
            raise ValueError("azure_block_threshold must be at least azure_block_size")
        if self.azure_block_threshold > MAX_SINGLE_PUT:
            raise ValueError(f"azure_block_threshold may not exceed Azure's single Put Blob of {MAX_SINGLE_PUT} bytes")


@functools.lru_cache(maxsize=8)
def _client(connection: AzureConnection, environment: tuple[tuple[str, str], ...]) -> Any:
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    settings = dict(environment)
    retry = ExponentialRetry(
        initial_backoff=0, increment_base=2, retry_total=connection.azure_max_attempts - 1, random_jitter_range=1
    )
    common: dict[str, Any] = {
        "retry_policy": retry,
        "max_single_put_size": MAX_SINGLE_PUT,
        "api_version": connection.azure_api_version,
    }
    connection_string = settings.get(CONNECTION_STRING_VAR)
    if connection.azure_account_url is None and connection_string:
        return BlobServiceClient.from_connection_string(connection_string, **common)
    account_url = connection.azure_account_url
    if account_url is None and settings.get(ACCOUNT_NAME_VAR):
        account_url = f"https://{settings[ACCOUNT_NAME_VAR]}.blob.core.windows.net"
    if account_url is None:
        raise StorageError(
            errno.EINVAL,
            f"Azure storage needs an account: set {CONNECTION_STRING_VAR}, or {ACCOUNT_NAME_VAR} (or the "
            "azure_account_url storage option) with credentials DefaultAzureCredential finds",
        )
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(account_url, credential=DefaultAzureCredential(), **common)


def open_azure(
    url: str, connection: AzureConnection | None = None, options: AzureOptions | None = None
) -> AzureStorage:
    """The backend behind `open_storage` for `az://container/prefix` (and `abfs://`, `abfss://`) URLs."""
    return AzureStorage((connection or AzureConnection()).client(), url, options)


def parse_azure_url(url: str) -> tuple[str, str]:
    """`az://container/some/prefix` -> (`container`, `some/prefix/`); the prefix is '' or ends with '/'."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise ValueError(f"{url!r} is not an az:// URL")
    container, _, prefix = rest.partition("/")
    if not container:
        raise ValueError(f"{url!r} names no container")
    if "@" in container:
        raise ValueError(
            f"{url!r}: name the container only (az://container/prefix); the account comes from "
            f"{CONNECTION_STRING_VAR}, {ACCOUNT_NAME_VAR} or the azure_account_url storage option"
        )
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return container, f"{prefix}/" if prefix else ""


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _etag(value: str) -> str:
    return value.strip('"')


class AzureStorage:
    """A container prefix in Azure Blob Storage as object storage.

    Blobs only ever appear complete: a Put Blob is atomic, and staged blocks are invisible until one
    Put Block List commits them (uncommitted blocks are discarded by the service: at the blob's next
    commit, or after a week). Every blob records its sha256 in its metadata, which `stat` reports.
    """

    def __init__(self, client: Any, url: str, options: AzureOptions | None = None) -> None:
        self.client = client
        self.container, self.prefix = parse_azure_url(url)
        self.options = options or AzureOptions()
        self._container = client.get_container_client(self.container)

    @property
    def root(self) -> str:
        """`az://container/prefix`, the spelling Lance and fsspec both read, whichever scheme opened it."""
        return f"az://{self.container}/{self.prefix}".rstrip("/")

    def object_store_options(self) -> dict[str, str]:
        """This client's account, endpoint and credential in the `object_store` crate's terms (Lance's
        `storage_options`). The values include secrets: pass them on, never log them."""
        options = {"azure_storage_account_name": self.client.account_name}
        url = urlsplit(self.client.url)  # a SAS from the connection string is the URL's query
        endpoint = f"{url.scheme}://{url.netloc}{url.path}".rstrip("/")
        if endpoint != f"https://{self.client.account_name}.blob.core.windows.net":
            options["azure_storage_endpoint"] = endpoint
            options["allow_http"] = str(url.scheme == "http").lower()
        credential = self.client.credential
        if url.query:
            options["azure_storage_sas_key"] = url.query
        elif hasattr(credential, "account_key"):
            options["azure_storage_account_key"] = credential.account_key
        elif hasattr(credential, "get_token"):
            options["azure_storage_token"] = credential.get_token("https://storage.azure.com/.default").token
        else:
            options["azure_skip_signature"] = "true"
        return options

    def _blob(self, key: str) -> Any:
        return self._container.get_blob_client(self.prefix + check_key(key))

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        code = errno.ENOENT if _is_missing(exc) else errno.EIO
        reason = _reason(exc)
        return StorageError(code, f"cannot {action} {self.root}/{key}: {reason}")

    # Writing

    def put(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo:
        info = self._write(key, data, sha256, None)
        assert info is not None
        return info

    def put_if_absent(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo | None:
        """A Put Blob (or Put Block List) with `If-None-Match: *`: of two writers racing for one key, exactly
        one creates it; None, with nothing replaced, when the key exists. A large blob is asked about with
        a HEAD first, sparing the staging of blocks that could not be committed."""
        return self._write(key, data, sha256, "*")

    def put_if_match(self, key: str, data: bytes | memoryview, etag: str) -> ObjectInfo | None:
        """Replace the blob only if it is still the version `etag` names (`If-Match`); None when it is not (or gone)."""
        return self._write(key, data, None, etag)

    def _write(
        self, key: str, data: bytes | memoryview, sha256: str | None, condition: str | None
    ) -> ObjectInfo | None:
        """`condition` is None (any), '*' (only if absent) or an ETag (only that version)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        digest = sha256 or hashlib.sha256(data).hexdigest()
        blob = self._blob(key)
        arguments: dict[str, Any] = {"metadata": {SHA256_METADATA: digest}}
        if condition == "*":
            arguments["match_condition"] = MatchConditions.IfMissing
        elif condition is not None:
            arguments["etag"] = f'"{condition}"'
            arguments["match_condition"] = MatchConditions.IfNotModified
        try:
            if len(data) >= self.options.azure_block_threshold:
                if condition is not None and not self._condition_holds(key, condition):
                    return None
                response = self._put_blocks(blob, data, arguments)
            else:
                settings = ContentSettings(content_type=content_type(key) or DEFAULT)
                response = blob.upload_blob(
                    bytes(data),
                    overwrite=True,
                    length=len(data),
                    validate_content=True,  # Content-MD5, which the service verifies before the blob exists
                    content_settings=settings,
                    max_concurrency=1,
                    **arguments,
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            if condition is not None and _error_code(exc) in {"BlobAlreadyExists", "ConditionNotMet", "BlobNotFound"}:
                return None
            raise self._fail("write", key, exc) from exc
        except AzureError as exc:
            raise self._fail("write", key, exc) from exc
        return ObjectInfo(key, len(data), time.time_ns(), _etag(response["etag"]), digest)

    def _condition_holds(self, key: str, condition: str) -> bool:
        """A write's condition checked with a HEAD before staging blocks: only a hint, since the commit
        carries the condition itself and so decides."""
        current = self.stat(key)
        if condition == "*":
            return current is None
        return current is not None and current.etag == condition

    def _block_size(self, size: int) -> int:
        """The configured block size, grown when needed to stay within Azure's 50,000 blocks."""
        block_size = self.options.azure_block_size
        while -(-size // block_size) > MAX_BLOCKS:
            block_size *= 2
        return block_size

    def _put_blocks(self, blob: Any, data: bytes | memoryview, arguments: dict[str, Any]) -> dict[str, Any]:
        """Blocks staged on a bounded pool, each with its Content-MD5, then one Put Block List carrying the
        write's condition, which the service checks atomically as the blob appears.

        Block ids are unique to this upload: two writers of one key stage blocks side by side, and each
        commit names only its own, never a mix. Blocks of an upload that fails are never committed; the
        service discards them (at the key's next commit, or after a week)."""
        from azure.storage.blob import BlobBlock, ContentSettings

        view = memoryview(data)
        block_size = self._block_size(len(data))
        count = -(-len(data) // block_size)
        upload = uuid.uuid4().hex
        # Every block id of one blob must have the same length: a fixed-width number after the upload's id.
        ids = [base64.b64encode(f"{upload}-{number:05d}".encode()).decode() for number in range(count)]

        def stage(number: int) -> None:
            chunk = view[number * block_size : (number + 1) * block_size]
            blob.stage_block(ids[number], bytes(chunk), length=len(chunk), validate_content=True)

        workers = max(1, min(self.options.azure_block_concurrency, count))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azure-block") as pool:
            list(pool.map(stage, range(count)))
        whole_md5 = hashlib.md5(data, usedforsecurity=False).digest()
        key = blob.blob_name[len(self.prefix) :]
        settings = ContentSettings(content_type=content_type(key) or DEFAULT, content_md5=bytearray(whole_md5))
        response: dict[str, Any] = blob.commit_block_list(
            [BlobBlock(block_id) for block_id in ids], content_settings=settings, **arguments
        )
        return response

    def delete(self, key: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            self._blob(key).delete_blob()
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise self._fail("delete", key, exc) from exc

    def remove_abandoned(self, older_than_s: float) -> int:
        """Nothing to remove: a killed writer leaves only uncommitted blocks, which no listing or read
        shows and which the service discards itself (at the key's next commit, else after a week)."""
        return 0

    # Reading

    def _get(
        self, key: str, offset: int | None = None, length: int | None = None, etag: str | None = None
    ) -> tuple[bytes, str] | None:
        """One blob (or a range of it) and its ETag; None when there is no such blob. Each response's
        MD5 is checked where the service gives one (ranges of up to 4 MiB); a body that breaks mid-way
        is fetched again by the client library, a bounded number of times."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

        arguments: dict[str, Any] = {"max_concurrency": 1}
        if offset is not None:
            arguments.update(offset=offset, length=length)
            arguments["validate_content"] = bool(length is not None and length <= 4 * MiB)
        if etag:
            # Pins every range to the version opened: a blob replaced mid-read fails (412), never a mix.
            arguments.update(etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified)
        try:
            downloader = self._blob(key).download_blob(**arguments)
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        except ResourceModifiedError as exc:
            message = f"cannot read {self.root}/{key}: it changed while being read; run again"
            raise StorageError(errno.ESTALE, message) from exc
        except AzureError as exc:
            raise self._fail("read", key, exc) from exc
        return bytes(data), _etag(downloader.properties.etag)

    def read(self, key: str) -> bytes:
        found = self._get(key)
        if found is None:
            raise StorageError(errno.ENOENT, f"cannot read {self.root}/{key}: no such object")
        return found[0]

    def read_with_etag(self, key: str) -> tuple[bytes, str] | None:
        return self._get(key)

    def delete_if_match(self, key: str, etag: str) -> None:
        """Delete the blob only if it is still the version `etag` names; otherwise leave it."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

        try:
            self._blob(key).delete_blob(etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            pass
        except AzureError as exc:
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
            found = self._get(key, start, end - start, info.etag)
            if found is None:
                raise StorageError(errno.ENOENT, f"cannot read {self.root}/{key}: deleted while being read")
            return found[0]

        options = self.options
        return RangedReader(fetch, info.size, options.azure_read_block_size, options.azure_read_blocks_kept)  # type: ignore[return-value]

    def stat(self, key: str) -> ObjectInfo | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            properties = self._blob(key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._fail("stat", key, exc) from exc
        return ObjectInfo(
            key,
            int(properties.size),
            _ns(properties.last_modified),
            _etag(properties.etag),
            (properties.metadata or {}).get(SHA256_METADATA),
        )

    def stat_many(self, keys: Sequence[str]) -> list[ObjectInfo | None]:
        return list(shared_pool(self.options.azure_head_concurrency).map(self.stat, keys))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        from azure.core.exceptions import AzureError

        try:
            pages = self._container.list_blobs(
                name_starts_with=self.prefix + prefix, results_per_page=self.options.azure_list_page_size
            )
            for item in pages:
                key = item.name[len(self.prefix) :]
                yield ObjectInfo(key, int(item.size), _ns(item.last_modified), _etag(item.etag))
        except AzureError as exc:
            raise self._fail("list", prefix, exc) from exc


def _error_code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _is_missing(exc: Exception) -> bool:
    from azure.core.exceptions import ResourceNotFoundError

    return isinstance(exc, ResourceNotFoundError)


def _reason(exc: Exception) -> str:
    """The service's error code and the first line of its message (the SDK appends the request's
    headers and XML body, which the one-line error does not need)."""
    code = _error_code(exc)
    message = str(getattr(exc, "message", "") or exc).strip().splitlines()
    first = message[0] if message else type(exc).__name__
    return f"{code}: {first}" if code and code not in first else first
