"""The type name `clip_assets.defs.component.CuratedDataset`, which datasets' defs.yaml files written before
the component moved to `clip_assets.components` still name: they keep loading unchanged."""

from clip_assets.components.curated_dataset import CuratedDataset

__all__ = ["CuratedDataset"]
