"""Upstream stand-ins that make processed videos: `clip-assets ingest` (real video in, with PyAV and
Pillow), its clip planning, its honest visual descriptors, and synthetic sample videos.

Nothing is re-exported here, so importing one module does not pull in the others' dependencies.
"""
