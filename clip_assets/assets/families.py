"""The five output-family assets, in one place; importing this module also registers their builders."""

from clip_assets.assets.clip_embeddings import clip_embeddings
from clip_assets.assets.clip_files import clip_files
from clip_assets.assets.clip_metadata import clip_metadata
from clip_assets.assets.clip_previews import clip_previews
from clip_assets.assets.video_summaries import video_summaries

OUTPUT_FAMILIES = (clip_files, clip_previews, clip_embeddings, clip_metadata, video_summaries)
