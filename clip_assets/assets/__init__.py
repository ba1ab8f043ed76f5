"""Thin Dagster assets: one module per output family, plus the inbox source and the dataset roll-up."""
