"""An exclusive, expiring lease on a key, made of conditional writes only (S3 and any store like it).

Object stores have no locks, but they have conditional writes: create a key only if it is absent
(`If-None-Match: *` on S3), replace or delete only the version one read (`If-Match: <etag>`). A lease
is a small object naming its holder and an expiry; the holder renews it in the background; a lease
whose holder died expires and is taken over conditionally, so exactly one contender wins. Expiry is
judged by the contender's clock against the holder's, with a margin for clock skew. Any backend that
implements `ConditionalWrites` gets leases by building one of these.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import socket
import threading
import time
import uuid

from clip_assets.storage.base import ConditionalWrites, StorageError

TTL_S = 120.0
RENEW_EVERY_S = 30.0
CLOCK_SKEW_S = 30.0


class ExpiringLease:
    """Held from `acquire` to `release`; `check` raises if a renewal failed long enough to lose it."""

    def __init__(
        self, storage: ConditionalWrites, key: str, ttl_s: float | None = None, renew_every_s: float | None = None
    ) -> None:
        self.storage = storage
        self.key = key
        # The module's values when the lease is made, not when this module was imported.
        self.ttl_s = TTL_S if ttl_s is None else ttl_s
        self.renew_every_s = RENEW_EVERY_S if renew_every_s is None else renew_every_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _document(self) -> bytes:
        return json.dumps({"holder": self.holder, "expires_at": time.time() + self.ttl_s}).encode()

    def _where(self) -> str:
        return f"{self.storage.root}/{self.key}"

    def acquire(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            created = self.storage.put_if_absent(self.key, self._document())
            if created is not None:
                self.etag = created.etag
                break
            current = self.storage.read_with_etag(self.key)
            if current is None:  # released between our two requests: try again at once
                continue
            data, etag = current
            try:
                lease = json.loads(data)
                holder, expires_at = str(lease["holder"]), float(lease["expires_at"])
            except (ValueError, KeyError, TypeError):
                holder, expires_at = "an unreadable lease", 0.0
            if time.time() > expires_at + CLOCK_SKEW_S:
                taken = self.storage.put_if_match(self.key, self._document(), etag)
                if taken is not None:
                    self.etag = taken.etag
                    break
                continue
            if time.monotonic() >= deadline:
                raise StorageError(
                    errno.ETIMEDOUT,
                    f"{self._where()}: held by {holder} (until {time.strftime('%H:%M:%S', time.gmtime(expires_at))} "
                    f"UTC unless renewed) for longer than {timeout_s:.0f} s",
                )
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, 2.0)
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.key}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        last_renewed = time.monotonic()
        while not self._stop.wait(self.renew_every_s):
            try:
                renewed = self.storage.put_if_match(self.key, self._document(), self.etag or "")
            except StorageError as exc:
                if time.monotonic() - last_renewed > self.ttl_s:
                    self.lost = f"not renewed for {self.ttl_s:.0f} s ({exc})"
                    return
                continue
            if renewed is None:
                self.lost = "taken over by another writer after it expired"
                return
            self.etag, last_renewed = renewed.etag, time.monotonic()

    def check(self) -> None:
        if self.lost:
            raise StorageError(errno.ENOLCK, f"{self._where()}: lease lost, {self.lost}; nothing more is recorded")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self.etag and not self.lost:
            # A lease that cannot be deleted expires on its own; the write's own outcome is what matters.
            with contextlib.suppress(StorageError):
                self.storage.delete_if_match(self.key, self.etag)
