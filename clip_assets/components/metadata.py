"""Dagster's metadata values for what the families, the products and the checks say without Dagster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import MetadataValue

from clip_assets.metadata import Location, Markdown, MetadataEntry


def dagster_value(value: MetadataEntry) -> Any:
    """One entry as the UI shows it: Markdown rendered, a location linked, mappings and lists as JSON."""
    if isinstance(value, Markdown):
        return MetadataValue.md(value)
    if isinstance(value, Location):
        return MetadataValue.path(value)
    if isinstance(value, bool) or value is None:
        return MetadataValue.text("none") if value is None else value
    if isinstance(value, int):
        return MetadataValue.int(value)
    if isinstance(value, float):
        return MetadataValue.float(value)
    if isinstance(value, str):
        return MetadataValue.text(value)
    return MetadataValue.json(value)


def dagster_metadata(entries: Mapping[str, MetadataEntry]) -> dict[str, Any]:
    return {name: dagster_value(value) for name, value in entries.items()}
