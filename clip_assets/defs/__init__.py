"""The code location's instances, one folder per curated dataset, each a `defs.yaml` of type
`clip_assets.components.CuratedDataset` (`default_dataset/` is the embedded default). The component
types and the factories behind them live in `clip_assets.components`."""
