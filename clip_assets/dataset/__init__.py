"""The curated dataset as a whole, read back from what the families wrote: roll-ups and derived tables.

`open_dataset(root)` is the read-back API (docs/dataset.md): the clip index, SQL over it, nearest
neighbours, the near-duplicate groups and the training shards.
"""

from clip_assets.dataset.read import ClipDataset, DatasetNotFoundError, open_dataset

__all__ = ["ClipDataset", "DatasetNotFoundError", "open_dataset"]
