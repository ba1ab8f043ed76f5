"""Dagster's objects, and nothing else: the factories that make one curated dataset's assets, checks,
jobs, sensors and resources from the family list, the `CuratedDataset` component that calls them from
a YAML file, and one folder per dataset instance (`default_dataset/defs.yaml`)."""
