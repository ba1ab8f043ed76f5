"""A fault-injecting proxy in front of a store's endpoint (moto, LocalStack, Azurite, fake-gcs-server).

It forwards every request unchanged, counts requests by the store's operation (so a test can say "a
re-run issued no write"), and on demand answers the next requests itself with throttling (503) or
server errors, resets connections, plays dead for a while, or flips a byte of a request body on its
way (what a checksum the server verifies must catch). Writes carrying `If-None-Match` / `If-Match`
are forwarded one at a time: S3 checks the condition atomically with the write, while moto checks,
then writes, so two racing completes could both pass it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Response = tuple[int, list[tuple[str, str]], bytes]


@dataclass(frozen=True)
class Forwarded:
    """A request as the proxy forwards it: method, path with query, headers, body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# Turns a request the endpoint does not serve into one it does, with what turns the answer back; None
# leaves the request as it is.
Bridge = Callable[[Forwarded], tuple[Forwarded, Callable[[Response], Response]] | None]

# Headers the proxy sets itself rather than copying from the endpoint's answer.
HOP_BY_HOP = frozenset({"connection", "transfer-encoding", "keep-alive", "content-length", "server", "date"})


@dataclass(frozen=True)
class Request:
    """One request the proxy forwarded, as a test may want to check it."""

    operation: str
    path: str
    headers: dict[str, str]
    body_sha256: str
    bytes_returned: int
    body_md5: str = ""
    # The body's first bytes, for what a request carries inside it (GCS's object resource).
    body_start: bytes = b""
    query: str = ""


@dataclass
class Fault:
    """Answer the next `count` matching requests with `status`/`code`, reset the connection, or forward
    them with one byte of the body flipped (`corrupt`: the byte at `corrupt_at`, counted from the end
    when negative, so that a multipart body's data rather than its boundary is hit)."""

    operations: frozenset[str]
    count: int
    status: int = 503
    code: str = "SlowDown"
    reset: bool = False
    corrupt: bool = False
    corrupt_at: int = 0


class FaultProxy:
    """A threaded HTTP proxy in front of the endpoint that counts requests and injects faults.

    `operation_of(method, path, query)` names each request's operation in the store's own terms (S3's
    `PutObject`, Azure's `PutBlockList`, GCS's `InsertObject`). A URL of the endpoint in a response
    header (GCS's resumable upload session) is rewritten to the proxy's, so later requests pass here too.
    `bridge`, if given, may translate a request the endpoint lacks into one it has (support/stores.py).
    """

    def __init__(
        self, upstream: str, operation_of: Callable[[str, str, str], str], bridge: Bridge | None = None
    ) -> None:
        self.upstream = urlsplit(upstream)
        upstream_base = f"{self.upstream.scheme}://{self.upstream.netloc}"
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
                operation = operation_of(self.command, path, query)
                fault = proxy._take_fault(operation)
                if fault is not None and fault.corrupt and body:
                    flipped = bytearray(body)
                    flipped[fault.corrupt_at] ^= 0xFF
                    body, fault = bytes(flipped), None  # headers (checksums) unchanged
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
                forwarded = Forwarded(self.command, self.path, headers, body)
                bridged = bridge(forwarded) if bridge is not None else None
                if bridged is not None:
                    forwarded = bridged[0]
                with proxy.conditional_writes if conditional else contextlib.nullcontext():
                    upstream.request(forwarded.method, forwarded.target, body=forwarded.body, headers=forwarded.headers)
                    response = upstream.getresponse()
                    answer: Response = (response.status, response.getheaders(), response.read())
                upstream.close()
                if bridged is not None:
                    answer = bridged[1](answer)
                status, answer_headers, data = answer
                record = Request(
                    operation,
                    path,
                    {k.lower(): v for k, v in self.headers.items()},
                    hashlib.sha256(body).hexdigest(),
                    len(data) if self.command != "HEAD" else 0,
                    hashlib.md5(body, usedforsecurity=False).hexdigest(),
                    body[:4096],
                    query,
                )
                with proxy.lock:  # recorded before the client hears back, so a test never misses it
                    proxy.counts[operation] += 1
                    proxy.requests.append(record)
                self.send_response(status)
                for name, value in answer_headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value.replace(upstream_base, proxy.url))
                # A HEAD answer has no body but announces the object's length.
                lengths = [v for k, v in answer_headers if k.lower() == "content-length"]
                length = lengths[0] if self.command == "HEAD" and lengths else None
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
        corrupt_at: int = 0,
    ) -> None:
        with self.lock:
            self.faults.append(Fault(frozenset(operations), count, status, code, reset, corrupt, corrupt_at))

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
