"""Thread pools kept for the life of the process, one per size.

A partition's family write, its verification and its ownership lookups each need a few threads for a
short while; starting them anew for every partition cost more than the work on small partitions (a
tenth of a re-run's time went to thread start-up). The pools are bounded by their size, and every
caller bounds what it submits, so sharing them changes no limit.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def shared_pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of `workers` threads; a task must never wait on another task of its pool."""
    with _LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix=f"clip-assets-{workers}")
        return pool
