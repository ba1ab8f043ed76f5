"""The curated dataset as a whole, read back from what the families wrote: roll-ups and derived tables."""
