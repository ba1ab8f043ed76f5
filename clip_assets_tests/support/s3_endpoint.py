"""A real S3 endpoint for tests: moto's server in its own process on loopback, and a fault-injecting proxy.

The proxy sits between clients and the endpoint. It forwards every request unchanged, counts requests
by S3 operation (so a test can say "a re-run issued no PUT"), and on demand answers the next requests
itself with throttling (503 SlowDown) or server errors, resets connections, plays dead for a while, or
flips a byte of a request body on its way (what a checksum the server verifies must catch).
Conditional writes (`If-None-Match` / `If-Match`) are forwarded one at a time: S3 checks the condition
atomically with the write, while moto checks, then writes, so two racing completes could both pass it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from clip_assets.components.resources import S3ConnectionResource
from clip_assets.storage.s3 import S3Storage
from clip_assets_tests.support.processes import free_port, wait_for

ACCESS_KEY = "AKIACLIPASSETSTEST01"
SECRET_KEY = "clip-assets-test-secret-3f9c1e7a-never-logged"
# Headers the proxy sets itself rather than copying from the endpoint's answer.
HOP_BY_HOP = frozenset({"connection", "transfer-encoding", "keep-alive", "content-length", "server", "date"})


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


@dataclass(frozen=True)
class Request:
    """One request the proxy forwarded, as a test may want to check it."""

    operation: str
    path: str
    headers: dict[str, str]
    body_sha256: str
    bytes_returned: int
    body_md5: str = ""


@dataclass
class Fault:
    """Answer the next `count` matching requests with `status`/`code`, reset the connection, or forward
    them with one byte of the body flipped (`corrupt`)."""

    operations: frozenset[str]
    count: int
    status: int = 503
    code: str = "SlowDown"
    reset: bool = False
    corrupt: bool = False


class FaultProxy:
    """A threaded HTTP proxy in front of the endpoint that counts requests and injects faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.counts: Counter[str] = Counter()
        self.requests: list[Request] = []
        self.injected: Counter[str] = Counter()
        self.faults: list[Fault] = []
        self.down_until = 0.0
        self.lock = threading.Lock()
        self.conditional_writes = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                operation = s3_operation(self.command, path, query)
                fault = proxy._take_fault(operation)
                if fault is not None and fault.corrupt and body:
                    body, fault = bytes([body[0] ^ 0xFF]) + body[1:], None  # headers (checksums) unchanged
                if fault is not None and fault.reset:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault is not None:
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
                        f"<Message>injected by the test proxy</Message></Error>"
                    ).encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive", "expect")
                }
                conditional = self.command in ("PUT", "POST") and any(
                    name.lower() in ("if-none-match", "if-match") for name in headers
                )
                with proxy.conditional_writes if conditional else contextlib.nullcontext():
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                upstream.close()
                record = Request(
                    operation,
                    path,
                    {k.lower(): v for k, v in self.headers.items()},
                    hashlib.sha256(body).hexdigest(),
                    len(data) if self.command != "HEAD" else 0,
                    hashlib.md5(body, usedforsecurity=False).hexdigest(),
                )
                with proxy.lock:  # recorded before the client hears back, so a test never misses it
                    proxy.counts[operation] += 1
                    proxy.requests.append(record)
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                # A HEAD answer has no body but announces the object's length.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _take_fault(self, operation: str) -> Fault | None:
        with self.lock:
            if time.monotonic() < self.down_until:
                self.injected["down"] += 1
                return Fault(frozenset(), 0, reset=True)
            for fault in self.faults:
                if fault.count > 0 and (not fault.operations or operation in fault.operations):
                    fault.count -= 1
                    kind = "reset" if fault.reset else "corrupt" if fault.corrupt else fault.status
                    self.injected[f"{operation}:{kind}"] += 1
                    return fault
        return None

    def inject(
        self,
        *operations: str,
        count: int,
        status: int = 503,
        code: str = "SlowDown",
        reset: bool = False,
        corrupt: bool = False,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(frozenset(operations), count, status, code, reset, corrupt))

    def go_down(self, seconds: float) -> None:
        """Reset every connection for `seconds`, as an endpoint that disappears for a while."""
        with self.lock:
            self.down_until = time.monotonic() + seconds

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.requests.clear()
            self.injected.clear()
            self.faults.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
