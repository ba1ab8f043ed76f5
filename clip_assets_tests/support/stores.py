"""One object store under test, whichever it is: S3 (moto), Azure Blob Storage (Azurite) or GCS (fake-gcs-server).

A `StoreEndpoint` is a fresh bucket or container behind the fault proxy, reached through the standard
variables a deployment would set (`AWS_ENDPOINT_URL_S3`, `AZURE_STORAGE_CONNECTION_STRING`,
`STORAGE_EMULATOR_HOST`: set in this process, and in `env` for the processes a test starts), with the
store's operation names for what a test counts: object writes, reads, stats and deletes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode

from clip_assets.components.resources import S3ConnectionResource
from clip_assets.storage import Storage, open_storage
from clip_assets_tests.support.fault_proxy import Forwarded, Response

MiB = 1024 * 1024


def azure_operation(method: str, path: str, query: str) -> str:
    """A coarse Blob service operation name (path-style: /account/container/blob)."""
    parameters = dict(part.partition("=")[::2] for part in query.split("&") if part)
    comp, restype = parameters.get("comp"), parameters.get("restype")
    if restype == "container" and comp != "list":
        return {"PUT": "CreateContainer", "DELETE": "DeleteContainer"}.get(method, "GetContainerProperties")
    if method == "PUT":
        return {"block": "PutBlock", "blocklist": "PutBlockList"}.get(comp or "", "PutBlob")
    if method == "GET":
        return {"list": "ListBlobs", "blocklist": "GetBlockList"}.get(comp or "", "GetBlob")
    return {"HEAD": "GetBlobProperties", "DELETE": "DeleteBlob"}.get(method, method)


def gcs_operation(method: str, path: str, query: str) -> str:
    """A coarse GCS operation name: the JSON API the client library speaks, and the XML API's
    listing and object reads and writes (what Lance's object_store speaks)."""
    parameters = dict(part.partition("=")[::2] for part in query.split("&") if part)
    if path.startswith("/upload/"):
        if method == "POST":
            return "StartResumableUpload" if parameters.get("uploadType") == "resumable" else "InsertObject"
        return "UploadChunk" if method in ("PUT", "POST") else "CancelUpload"
    if path.startswith("/download/") or parameters.get("alt") == "media":
        return "GetObjectMedia"
    if path.startswith("/storage/v1/b"):
        rest = path.removeprefix("/storage/v1/b").strip("/").split("/", 2)
        if len(rest) < 2:
            return "CreateBucket" if method == "POST" else "GetBucket"
        if len(rest) == 2:
            return "ListObjects"
        return {"GET": "GetObjectMetadata", "DELETE": "DeleteObject", "PATCH": "PatchObject"}.get(method, method)
    if path.strip("/").count("/") == 0:
        return "XmlListObjects"
    return {"GET": "XmlGetObject", "HEAD": "XmlHeadObject", "PUT": "XmlPutObject", "DELETE": "XmlDeleteObject"}.get(
        method, f"Xml{method}"
    )


def xml_put_as_json_upload(request: Forwarded) -> tuple[Forwarded, Callable[[Response], Response]] | None:
    """An XML API object PUT (what Lance's object_store writes with, its condition in
    `x-goog-if-generation-match`) as the JSON API's multipart upload with `ifGenerationMatch`, which
    fake-gcs-server 1.54 serves (its XML API reads and lists, but has no PUT); the answer as the XML API
    gives it: 200 with the object's ETag and generation. Every other request passes unchanged."""
    path, _, query = request.target.partition("?")
    if request.method != "PUT" or query or path.startswith(("/upload/", "/storage/", "/download/")):
        return None
    bucket, _, name = path.lstrip("/").partition("/")
    if not name:
        return None
    headers = {key.lower(): value for key, value in request.headers.items()}
    parameters = {"uploadType": "multipart"}
    if "x-goog-if-generation-match" in headers:
        parameters["ifGenerationMatch"] = headers["x-goog-if-generation-match"]
    resource = {"name": unquote(name), "contentType": headers.get("content-type", "application/octet-stream")}
    boundary = "clip-assets-xml-bridge"
    body = b"".join(
        [
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            json.dumps(resource).encode(),
            f"\r\n--{boundary}\r\nContent-Type: {resource['contentType']}\r\n\r\n".encode(),
            request.body,
            f"\r\n--{boundary}--".encode(),
        ]
    )
    target = f"/upload/storage/v1/b/{bucket}/o?{urlencode(parameters)}"
    forwarded = Forwarded("POST", target, {"Content-Type": f'multipart/related; boundary="{boundary}"'}, body)

    def answer(response: Response) -> Response:
        status, _, data = response
        if status != 200:
            return response
        created = json.loads(data)
        return 200, [("ETag", f'"{created["etag"]}"'), ("x-goog-generation", str(created["generation"]))], b""

    return forwarded, answer


@dataclass(frozen=True)
class Operations:
    """What a store calls each kind of request a test counts."""

    writes: frozenset[str]
    reads: frozenset[str]
    stats: frozenset[str]
    deletes: frozenset[str]
    lists: frozenset[str]
    # The read of a whole object by the backend's own client (not Lance's).
    read: str


OPERATIONS = {
    "s3": Operations(
        frozenset({"PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload"}),
        frozenset({"GetObject"}),
        frozenset({"HeadObject"}),
        frozenset({"DeleteObject"}),
        frozenset({"ListObjects"}),
        "GetObject",
    ),
    "azure": Operations(
        frozenset({"PutBlob", "PutBlock", "PutBlockList"}),
        frozenset({"GetBlob"}),
        frozenset({"GetBlobProperties"}),
        frozenset({"DeleteBlob"}),
        frozenset({"ListBlobs"}),
        "GetBlob",
    ),
    "gcs": Operations(
        frozenset({"InsertObject", "StartResumableUpload", "UploadChunk", "XmlPutObject"}),
        frozenset({"GetObjectMedia", "XmlGetObject"}),
        frozenset({"GetObjectMetadata", "XmlHeadObject"}),
        frozenset({"DeleteObject", "XmlDeleteObject"}),
        frozenset({"ListObjects", "XmlListObjects"}),
        "GetObjectMedia",
    ),
}


@dataclass
class StoreEndpoint:
    """A fresh bucket (container) of one store, behind the fault proxy `proxy`.

    `options` are the storage options tests open it with (block and part sizes small enough that a few
    MiB cross them); runs configured through the environment alone use the backend's defaults. `s3` is
    the S3 connection resource a Dagster run takes (None for the others, reached through `env` alone).
    """

    name: str
    scheme: str
    container: str
    proxy: Any
    env: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    s3: S3ConnectionResource | None = None
    # The credential a test checks never leaks (None where the emulator takes none: GCS).
    secret: str | None = None

    @property
    def label(self) -> str:
        """How docs and the reliability ledger name the store."""
        return {"s3": "S3", "azure": "Azure", "gcs": "GCS"}[self.name]

    @property
    def operations(self) -> Operations:
        return OPERATIONS[self.name]

    def url(self, prefix: str) -> str:
        return f"{self.scheme}://{self.container}/{prefix}"

    def storage(self, prefix: str, **options: Any) -> Storage:
        return open_storage(self.url(prefix), {**self.options, **options})

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(info.key for info in self.storage(prefix).list())

    def count(self, operations: frozenset[str]) -> int:
        return sum(self.proxy.counts[operation] for operation in operations)

    def requests(self, operations: frozenset[str]) -> list[Any]:
        return [request for request in self.proxy.requests if request.operation in operations]

    def writes_under(self, prefix: str) -> int:
        """Object writes so far to keys under `prefix` (a path in the bucket): named in the request's path
        (S3, Azure), or in the object resource of its body (GCS's JSON API uploads)."""
        named = f"/{self.container}/{prefix}"
        resource = json.dumps({"name": prefix})[:-2].encode()  # '{"name": "<prefix>' without its end
        return sum(
            named in unquote(request.path) or resource[1:] in request.body_start
            for request in self.requests(self.operations.writes)
        )
