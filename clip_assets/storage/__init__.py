"""Where bytes live: a small interface (put atomically, stat, read, delete, list) and its backends."""

from clip_assets.storage.base import Lease, ObjectInfo, Storage, StorageError
from clip_assets.storage.local import LocalStorage

__all__ = ["Lease", "LocalStorage", "ObjectInfo", "Storage", "StorageError"]
