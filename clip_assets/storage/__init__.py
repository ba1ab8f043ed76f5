"""Where bytes live: a small interface (put atomically, stat, read, delete, list) and its backends."""

from clip_assets.storage.base import ObjectInfo, Storage, StorageError
from clip_assets.storage.local import LocalStorage

__all__ = ["LocalStorage", "ObjectInfo", "Storage", "StorageError"]
