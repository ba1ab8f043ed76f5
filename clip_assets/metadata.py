"""Metadata a materialization or a check shows, said without Dagster: plain values, and the few kinds the UI
renders otherwise. The Dagster layer turns them into its metadata values (`clip_assets.components.metadata`):
text, numbers and booleans as they are, mappings and lists as JSON, `Markdown` rendered, `Location` a
link to a file or a store's object."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias


class Markdown(str):
    """Metadata text the UI renders as Markdown (an image, a table), not as plain text."""


class Location(str):
    """A path or a store's URL, shown as a link (`dagster/uri` is one)."""


MetadataEntry: TypeAlias = (
    int | float | str | bool | Markdown | Location | Sequence["MetadataEntry"] | Mapping[str, "MetadataEntry"] | None
)
Metadata: TypeAlias = Mapping[str, MetadataEntry]
