"""A seekable file over ranged reads, for streaming Parquet out of object stores without downloading it."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from fsspec.caching import BlockCache


class RangedReader(io.RawIOBase):
    """A seekable, read-only file over ranged GETs: one GET per large read, small reads share blocks.

    Parquet readers fetch large column chunks in a few big reads, which go out as exact ranges. The
    small ones (a footer, a row group's tiny identity columns, side by side in the file but read in an
    interleaved order) go through fsspec's block cache: aligned blocks, a few kept, so neighbours
    cost one request. Memory is the kept blocks plus what the caller asks for at once.
    """

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, block_size: int, blocks_kept: int) -> None:
        super().__init__()
        self._fetch = fetch
        self._small_reads = BlockCache(block_size, fetch, size, maxblocks=blocks_kept)
        self._block_size = block_size
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._position + size)
        if end <= self._position:
            return b""
        if end - self._position >= self._block_size:
            data = self._fetch(self._position, end)
        else:
            data = self._small_reads._fetch(self._position, end)
        self._position += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
