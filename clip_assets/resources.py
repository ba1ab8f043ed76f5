"""Dagster resources: where processed videos come from, where outputs go, and NeMo's writer knobs."""

from dagster import ConfigurableResource
from pydantic import Field

from clip_assets.settings import WriterSettings
from clip_assets.storage import LocalStorage, Storage


class StorageResource(ConfigurableResource):
    """A storage root chosen by configuration alone: a local folder (S3 URLs come with the S3 backend)."""

    url: str = Field(description="Local folder (relative paths resolve against the working directory).")

    def get_storage(self) -> Storage:
        if "://" in self.url:
            raise ValueError(f"storage URL {self.url!r}: only local folders are supported by this backend")
        return LocalStorage(self.url)


class WriterSettingsResource(ConfigurableResource):
    """NeMo Curator ClipWriterStage's settings, same names, defaults and meaning."""

    upload_clips: bool = Field(default=True, description="Write clip MP4s to clips/ and filtered_clips/.")
    dry_run: bool = Field(
        default=False,
        description="Write only processed_videos/ and processed_clip_chunks/, nothing per clip.",
    )
    generate_embeddings: bool = Field(default=True, description="Report clips that lack the embedding.")
    generate_previews: bool = Field(default=True, description="Report windows that lack a WebP preview.")
    generate_captions: bool = Field(default=True, description="Report passed clips that lack a caption.")
    embedding_algorithm: str = Field(
        default="cosmos-embed1",
        description="Embedding to write: cosmos-embed1 -> ce1_*, internvideo2 -> iv2_*, others -> <slug>_*.",
    )
    caption_models: list[str] | None = Field(
        default=None, description="Caption models in priority order; unset = every model present."
    )
    enhanced_caption_models: list[str] | None = Field(
        default=None, description="Enhanced caption models in priority order; unset = every model present."
    )
    max_workers: int = Field(default=6, ge=1, le=64, description="Concurrent writes per asset.")
    input_path: str = Field(default="", description="Prefix removed from video paths in processed_videos/.")

    def to_settings(self, output_location: str) -> WriterSettings:
        return WriterSettings(
            upload_clips=self.upload_clips,
            dry_run=self.dry_run,
            generate_embeddings=self.generate_embeddings,
            generate_previews=self.generate_previews,
            generate_captions=self.generate_captions,
            embedding_algorithm=self.embedding_algorithm,
            caption_models=tuple(self.caption_models) if self.caption_models is not None else None,
            enhanced_caption_models=(
                tuple(self.enhanced_caption_models) if self.enhanced_caption_models is not None else None
            ),
            max_workers=self.max_workers,
            input_path=self.input_path,
            output_location=output_location,
        )
