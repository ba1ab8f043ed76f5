"""Local-disk backend: atomic writes by temp file + rename inside the output root."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, cast

import pyarrow as pa

from clip_assets import layout
from clip_assets.storage.base import Lease, ObjectInfo, StorageError
from clip_assets.storage.keys import check_key


def open_local(url: str) -> LocalStorage:
    """The backend behind `open_storage` for plain paths and `file://` URLs."""
    return LocalStorage(url.removeprefix("file://"))


class LocalStorage:
    """A folder as object storage.

    Temporary files go to `_clip_assets/staging/` under the root, never next to the final file, so
    NeMo's tree only ever shows complete files; the rename into place is atomic because both are on
    the root's filesystem (when a subfolder is a different mount, the temp file is made beside the
    target instead).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).expanduser().resolve()
        self._root_text = str(self._root)
        self._staging = os.path.join(self._root_text, layout.STAGING.rstrip("/"))
        self._folders: set[str] = set()

    @property
    def root(self) -> str:
        return self._root.as_posix()

    def object_store_options(self) -> dict[str, str]:
        """A local path needs none."""
        return {}

    def path(self, key: str) -> Path:
        return self._root / check_key(key)

    def _file(self, key: str) -> str:
        """`path` as a string: the calls a partition makes per file take strings (see `_write`)."""
        return os.path.join(self._root_text, check_key(key))

    def put(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo:
        """Local files carry no hash of their own; `sha256` is the manifest's business here."""
        info = self._write(key, data, only_if_absent=False)
        assert info is not None
        return info

    def put_if_absent(self, key: str, data: bytes | memoryview, sha256: str | None = None) -> ObjectInfo | None:
        """Published with a hard link, which fails instead of replacing an existing file."""
        return self._write(key, data, only_if_absent=True)

    def _write(self, key: str, data: bytes | memoryview, *, only_if_absent: bool) -> ObjectInfo | None:
        target = self._file(key)
        temp = os.path.join(self._staging, f"{uuid.uuid4().hex}.tmp")
        try:
            for attempt in (1, 2):  # a folder removed behind the cache's back is made again, once
                try:
                    self._make_folders(os.path.dirname(target), self._staging)
                    try:
                        size, mtime_ns = _write_file(temp, data)
                        published = _publish(temp, target, only_if_absent)
                    except OSError as exc:
                        if exc.errno != errno.EXDEV:
                            raise
                        _remove(temp)
                        temp = os.path.join(
                            os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp"
                        )
                        size, mtime_ns = _write_file(temp, data)
                        published = _publish(temp, target, only_if_absent)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                    _remove(temp)  # written before the target's folder turned out to be gone
                    self._folders.clear()
            if not published:
                return None
        except OSError as exc:
            _remove(temp)  # a write or publication that failed half-way
            raise StorageError(exc.errno, f"cannot write {self.root}/{key}: {exc.strerror or exc}") from exc
        return ObjectInfo(key, size, mtime_ns)

    def _make_folders(self, *folders: str) -> None:
        """`makedirs` once per folder per instance: a partition writes thousands of files into a few folders."""
        for folder in folders:
            if folder not in self._folders:
                os.makedirs(folder, exist_ok=True)
                self._folders.add(folder)

    def read(self, key: str) -> bytes:
        try:
            with open(self._file(key), "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise StorageError(exc.errno, f"cannot read {self.root}/{key}: {exc.strerror or exc}") from exc

    def open(self, key: str) -> BinaryIO:
        """Arrow's own file reader: Parquet reads go straight to the kernel, not through Python's io
        (a third faster for large columns). Not a memory map: a file truncated in place by a careless
        producer must fail a read, not crash the process."""
        try:
            return cast(BinaryIO, pa.OSFile(self._file(key), "r"))
        except OSError as exc:
            raise StorageError(exc.errno, f"cannot open {self.root}/{key}: {exc.strerror or exc}") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        """None unless a regular file is there: a folder is not an object, nor is a path through a file."""
        try:
            st = os.stat(self._file(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(exc.errno, f"cannot stat {self.root}/{key}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime_ns)

    def stat_many(self, keys: Sequence[str]) -> list[ObjectInfo | None]:
        return [self.stat(key) for key in keys]

    def delete(self, key: str) -> None:
        """Remove the file, then the folders it leaves empty (`layout.folders_emptied_by`): removing a clip
        leaves no `previews/<uuid>/` behind. A folder another writer has just put a file into stays."""
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(exc.errno, f"cannot delete {self.root}/{key}: {exc.strerror or exc}") from exc
        for folder in layout.folders_emptied_by(key):
            path = os.path.join(self._root_text, folder.rstrip("/"))
            self._folders.discard(path)
            try:
                os.rmdir(path)
            except OSError:  # not empty (or already gone): neither it nor the folders above it go
                break

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._root / prefix if prefix else self._root
        for directory, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(directory) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield ObjectInfo(path.relative_to(self._root).as_posix(), st.st_size, st.st_mtime_ns)

    @contextmanager
    def lock(self, key: str, timeout_s: float) -> Iterator[Lease]:
        """An advisory `flock` on a lock file: released by the kernel when its holder dies, SIGKILL included."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+b")
        except OSError as exc:
            raise StorageError(exc.errno, f"cannot lock {self.root}/{key}: {exc.strerror or exc}") from exc
        with handle:
            deadline = time.monotonic() + timeout_s
            delay = 0.01
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StorageError(
                            errno.ETIMEDOUT, f"{self.root}/{key}: still held by another writer after {timeout_s:.0f} s"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
            try:
                yield _HeldLock()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove_abandoned(self, older_than_s: float) -> int:
        staging = Path(self._staging)
        if not staging.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for entry in staging.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _write_file(path: str, data: bytes | memoryview) -> tuple[int, int]:
    """Write a new file whole; its size and mtime, which the rename or link into place keeps."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        written = 0
        while written < len(view):
            written += os.write(descriptor, view[written:])
        st = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    return st.st_size, st.st_mtime_ns


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _publish(temp: str, target: str, only_if_absent: bool) -> bool:
    """Move a complete temp file into place atomically (the temp name is gone either way); False when
    `only_if_absent` finds a file there."""
    if not only_if_absent:
        os.replace(temp, target)
        return True
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    finally:
        os.unlink(temp)
    return True


class _HeldLock:
    """A kernel lock cannot be lost while its holder lives."""

    def check(self) -> None:
        return None
