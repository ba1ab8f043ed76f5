"""A real S3 endpoint for tests: moto's server in its own process on loopback, behind the fault-injecting
proxy (support/fault_proxy.py), which names each request by its S3 operation (`s3_operation`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from clip_assets.components.resources import S3ConnectionResource
from clip_assets.storage.s3 import S3Storage
from clip_assets_tests.support.fault_proxy import FaultProxy
from clip_assets_tests.support.processes import free_port, wait_for

ACCESS_KEY = "AKIACLIPASSETSTEST01"
SECRET_KEY = "clip-assets-test-secret-3f9c1e7a-never-logged"


class MotoServer:
    """`python -m moto.server` in a child process; stopped with the fixture."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        try:
            wait_for(self._accepting, 60, "moto server to accept connections", interval_s=0.1, retry_on=(OSError,))
        except BaseException:
            self.stop()
            raise

    def _accepting(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"moto server exited with {self.process.returncode}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def s3_operation(method: str, path: str, query: str) -> str:
    """A coarse S3 operation name, enough to count what a client did."""
    parameters = {part.split("=")[0] for part in query.split("&") if part}
    if method == "PUT":
        if "partNumber" in parameters:
            return "UploadPart"
        return "PutObject" if path.count("/") >= 2 and path.split("/", 2)[2] else "CreateBucket"
    if method == "POST":
        if "uploads" in parameters:
            return "CreateMultipartUpload"
        if "uploadId" in parameters:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in parameters else "POST"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in parameters else "DeleteObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "GET":
        if "uploads" in parameters:
            return "ListMultipartUploads"
        if "list-type" in parameters or path.count("/") < 2 or not path.split("/", 2)[2]:
            return "ListObjects"
        return "GetObject"
    return method


def s3_proxy(upstream: str) -> FaultProxy:
    """The fault proxy in front of an S3 endpoint, counting S3 operations."""
    return FaultProxy(upstream, s3_operation)


@dataclass
class S3Endpoint:
    """A fresh bucket behind the fault proxy, and a connection resource configured for it."""

    proxy: FaultProxy
    bucket: str
    connection: S3ConnectionResource

    @property
    def client(self) -> Any:
        return self.connection.get_client()

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def storage(self, prefix: str) -> S3Storage:
        return S3Storage(self.client, self.url(prefix), self.connection.write_options())

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(info.key for info in self.storage(prefix).list())


def s3_connection_via(proxy: FaultProxy, **overrides: Any) -> S3ConnectionResource:
    """Small multipart sizes, so a test can cross the threshold with a few MiB."""
    settings: dict[str, Any] = {
        "endpoint_url": proxy.url,
        "addressing_style": "path",
        "multipart_threshold_mb": 6,
        "part_size_mb": 5,
        "max_attempts": 5,
    }
    return S3ConnectionResource(**{**settings, **overrides})
