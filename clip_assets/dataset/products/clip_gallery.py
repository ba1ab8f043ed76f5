"""`clip_gallery`: a static HTML gallery of every passed clip, opened from disk or served from a bucket.

Animated previews, captions, scores, duration, links to each clip's MP4 and metadata, filters by caption
words, score and video, one page of clips loaded at a time (`clip_assets.dataset.gallery`). A clip without
an MP4 or a preview is shown without it, counted and listed.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.gallery import (
    COLUMNS,
    PAGE_SIZE,
    gallery_files,
    read_gallery_index,
    verify_gallery,
    write_gallery,
)
from clip_assets.dataset.products.base import Built, Checked, DerivedProduct, ProductCheck, ProductOutput, ProductRun
from clip_assets.dataset.products.clip_tables import CLIP_INDEX
from clip_assets.dataset.tables import read_clip_index
from clip_assets.metadata import Location, Metadata
from clip_assets.storage import Storage

CLIP_GALLERY = "clip_gallery"
_LISTED = 20


class ClipGallerySettings(BaseModel):
    page_size: int = Field(default=PAGE_SIZE, ge=1, le=10_000, description="Clips per page file and per screen.")


def build(run: ProductRun) -> Built:
    settings: ClipGallerySettings = run.settings
    storage = run.storage
    rows = read_clip_index(storage, list(COLUMNS), filter=ci.PASSED)  # no embeddings
    made = write_gallery(storage, rows, page_size=settings.page_size)
    return Built(
        {
            CLIP_GALLERY: {
                "clips": made.clips,
                "videos": made.videos,
                "pages": made.pages,
                "clips_without_mp4": len(made.without_mp4),
                "clips_without_preview": len(made.without_preview),
                "without_mp4": made.without_mp4[:_LISTED],
                "without_preview": made.without_preview[:_LISTED],
                "files_written": len(made.written),
                "files_unchanged": made.unchanged,
                "pages_removed": len(made.removed),
                "bytes": made.bytes_total,
                "dagster/uri": Location(layout.full_location(storage.root, layout.gallery_page_key())),
            }
        }
    )


def shows_every_clip(run: ProductRun) -> Checked:
    storage = run.storage
    rows = read_clip_index(storage, list(COLUMNS), filter=ci.PASSED)
    problems = verify_gallery(storage, rows)
    content = gallery_files(rows)
    incomplete = sorted(set(content.without_mp4) | set(content.without_preview))
    if problems:
        description = "; ".join(problems[:3])
    elif incomplete:
        description = (
            f"{len(content.without_mp4)} clips shown without an MP4, {len(content.without_preview)} without a preview"
        )
    else:
        description = "the gallery shows every passed clip"
    return Checked(
        passed=not problems and not incomplete,
        severity="error" if problems else "warn",
        description=description,
        metadata={
            "problems": problems[:_LISTED],
            "without_mp4": content.without_mp4[:_LISTED],
            "without_preview": content.without_preview[:_LISTED],
        },
    )


def figures(storage: Storage) -> Metadata:
    gallery = read_gallery_index(storage)
    return {
        "gallery_clips_without_mp4": gallery.get("clipsWithoutMp4") if gallery else None,
        "gallery_clips_without_preview": gallery.get("clipsWithoutPreview") if gallery else None,
    }


PRODUCT = DerivedProduct(
    name=CLIP_GALLERY,
    outputs=(
        ProductOutput(
            CLIP_GALLERY,
            "A static HTML gallery (gallery/index.html) of every passed clip: animated preview, captions, scores, "
            "duration, links to its MP4 and metadata; filters by caption words, score and video. Works opened from "
            "disk and served from a bucket; loads one page of clips at a time. A clip without an MP4 or a preview "
            "is shown without it, counted and listed.",
            frozenset({"html"}),
        ),
    ),
    build=build,
    depends_on=(CLIP_INDEX,),
    settings=ClipGallerySettings,
    checks=(
        ProductCheck(
            "shows_every_clip",
            CLIP_GALLERY,
            "The gallery's files are byte for byte what the index makes (every passed clip counted and shown, no "
            "page missing, changed or past the last). Warns listing the clips shown without an MP4 or a preview.",
            shows_every_clip,
        ),
    ),
    figures=figures,
)
