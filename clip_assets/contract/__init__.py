"""The processed-video file: clip-assets' input contract (see docs/processed-video-format.md)."""

from clip_assets.contract.errors import ProcessedVideoError
from clip_assets.contract.reader import ProcessedVideoReader
from clip_assets.contract.records import ClipRecord, EmbeddingLayout, VideoInfo, Window
from clip_assets.contract.writer import processed_video_bytes, write_processed_video

__all__ = [
    "ClipRecord",
    "EmbeddingLayout",
    "ProcessedVideoError",
    "ProcessedVideoReader",
    "VideoInfo",
    "Window",
    "processed_video_bytes",
    "write_processed_video",
]
