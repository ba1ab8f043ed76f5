"""Dagster's side of clip-assets: the component type a dataset's defs.yaml names and the factories it calls.

`CuratedDataset` (`type: clip_assets.components.CuratedDataset`) turns one YAML file into one curated
dataset's assets, checks, jobs, sensors and resources, all made from the family list and named
after the dataset's key prefix. Nothing here holds an instance: those are the YAML files in `defs/`.
"""

from clip_assets.components.curated_dataset import CuratedDataset

__all__ = ["CuratedDataset"]
