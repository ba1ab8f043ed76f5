"""Dagster resources: where processed videos come from, where outputs go, and NeMo's writer knobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from clip_assets.components.environment import (
    S3_ADDRESSING_STYLE_VAR,
    S3_CHECKSUM_VAR,
    S3_SSE_KMS_KEY_ID_VAR,
    S3_SSE_VAR,
)
from clip_assets.contract.limits import ValidationLimits
from clip_assets.engine.batches import PARTITIONS_IN_PARALLEL, READ_AHEAD
from clip_assets.settings import WriterSettings
from clip_assets.storage import Storage, StorageSpec
from clip_assets.storage.options import options_of
from clip_assets.storage.s3 import MiB, S3Connection, S3Options


class S3ConnectionResource(S3Resource):
    """dagster-aws's S3Resource (credentials, profile, region, endpoint, retries) plus how clip-assets writes.

    Leave the credential fields unset to use the standard AWS chain (environment, profile, instance
    role); set them only with `EnvVar`, so the UI and run config show the variable's name, never its
    value. `endpoint_url` unset also follows botocore's own `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`.
    Requests are retried in botocore's standard mode: exponential backoff with jitter on throttling,
    5xx and connection errors, at most `max_attempts` tries.
    """

    addressing_style: str = Field(
        default="auto", description="'path' for most MinIO/Ceph setups, 'virtual' or 'auto' for AWS."
    )
    multipart_threshold_mb: int = Field(default=16, ge=5, description="Objects this large or larger use multipart.")
    part_size_mb: int = Field(default=8, ge=5, description="Multipart part size (grown to stay within 10,000 parts).")
    part_concurrency: int = Field(default=4, ge=1, le=32, description="Parts of one object uploaded at once.")
    checksum: str = Field(
        default="sha256",
        description="Integrity the server verifies on every upload: 'sha256' (x-amz-checksum-sha256) or 'md5' "
        "(Content-MD5, for stores without flexible checksums).",
    )
    server_side_encryption: str = Field(default="", description="'', 'AES256' (SSE-S3) or 'aws:kms' (SSE-KMS).")
    sse_kms_key_id: str = Field(default="", description="KMS key id or ARN for 'aws:kms'; empty: the bucket's key.")
    max_pool_connections: int = Field(default=32, ge=1, description="HTTP connections the client keeps open.")

    def connection(self) -> S3Connection:
        return S3Connection(
            profile_name=self.profile_name,
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            use_ssl=self.use_ssl,
            verify=self.verify,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            max_attempts=self.max_attempts,
            addressing_style=self.addressing_style,  # type: ignore[arg-type]
            max_pool_connections=self.max_pool_connections,
            use_unsigned_session=self.use_unsigned_session,
        )

    def get_client(self) -> Any:
        """A client for this connection's checksum mode (an `md5` client sends no flexible checksums)."""
        return self.connection().client(self.write_options().checksum)

    def storage_options(self) -> dict[str, Any]:
        """This connection as `open_storage`'s options: the fields set here, in the S3 backend's names."""
        return options_of(self.connection(), self.write_options())

    def write_options(self) -> S3Options:
        if self.checksum not in ("sha256", "md5"):
            raise ValueError(f"checksum must be sha256 or md5, got {self.checksum!r}")
        if self.server_side_encryption not in ("", "AES256", "aws:kms"):
            raise ValueError(
                f"server_side_encryption must be '', AES256 or aws:kms, got {self.server_side_encryption!r}"
            )
        return S3Options(
            multipart_threshold=self.multipart_threshold_mb * MiB,
            part_size=self.part_size_mb * MiB,
            part_concurrency=self.part_concurrency,
            checksum=self.checksum,  # type: ignore[arg-type]
            server_side_encryption=self.server_side_encryption,  # type: ignore[arg-type]
            sse_kms_key_id=self.sse_kms_key_id,
        )


def s3_connection(setting: Callable[[str], Any]) -> S3ConnectionResource:
    """The S3 connection a deployment configures through CLIP_ASSETS_S3_* variables.

    `setting(name)` gives each variable's value: an `EnvVar` in Definitions (the UI shows the name),
    the plain value in commands that run outside Dagster.
    """
    return S3ConnectionResource(
        addressing_style=setting(S3_ADDRESSING_STYLE_VAR),
        checksum=setting(S3_CHECKSUM_VAR),
        server_side_encryption=setting(S3_SSE_VAR),
        sse_kms_key_id=setting(S3_SSE_KMS_KEY_ID_VAR),
    )


class StorageResource(ConfigurableResource):
    """A storage root chosen by configuration alone: a local folder, or a store's URL (`s3://bucket/prefix`)."""

    url: str = Field(
        description="Local folder (relative paths resolve against the working directory) or a store's URL "
        "(s3://bucket/prefix)."
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="How to reach the store, in its backend's option names (docs/architecture.md, Storage): "
        "an endpoint, addressing, checksums. Credentials come from the store's standard chain, never from here.",
    )
    s3: S3ConnectionResource | None = Field(
        default=None,
        description="dagster-aws's S3 connection, for deployments that configure S3 as a resource (credentials "
        "through EnvVar); `storage_options` override it.",
    )
    _storage: Storage | None = PrivateAttr(default=None)

    def spec(self) -> StorageSpec:
        """The URL and every option, for a process that opens the storage itself."""
        s3 = self.s3.storage_options() if self.s3 is not None else {}
        return StorageSpec(self.url, {**s3, **self.storage_options})

    def get_storage(self) -> Storage:
        """Built once per resource instance (a cloud client is costly to make)."""
        if self._storage is None:
            self._storage = self.spec().open()
        return self._storage


class ValidationLimitsResource(ConfigurableResource):
    """Upper bounds a processed video must respect, so one hostile file cannot exhaust a worker."""

    max_mp4_mb: int = Field(default=2048, ge=1, description="Largest clip MP4 accepted.")
    max_webp_mb: int = Field(default=64, ge=1, description="Largest WebP preview accepted.")
    max_windows_per_clip: int = Field(default=4096, ge=1)
    max_embedding_dim: int = Field(default=65536, ge=1)
    max_caption_chars: int = Field(default=1_000_000, ge=1, description="Longest caption or extra_metadata text.")
    max_name_chars: int = Field(default=256, ge=1, description="Longest caption model or embedding algorithm name.")
    max_clips: int = Field(default=1_000_000, ge=1, description="Most clips one processed video may hold.")

    def to_limits(self) -> ValidationLimits:
        return ValidationLimits(
            max_mp4_bytes=self.max_mp4_mb * MiB,
            max_webp_bytes=self.max_webp_mb * MiB,
            max_windows_per_clip=self.max_windows_per_clip,
            max_embedding_dim=self.max_embedding_dim,
            max_caption_chars=self.max_caption_chars,
            max_name_chars=self.max_name_chars,
            max_clips=self.max_clips,
        )


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
    embedding_version: str = Field(
        default="",
        description="The embedding model's version (e.g. 224p, 448p), recorded with its vectors: NeMo's tree "
        "names none. Empty: not stated.",
    )
    caption_models: list[str] | None = Field(
        default=None, description="Caption models in priority order; unset = every model present."
    )
    enhanced_caption_models: list[str] | None = Field(
        default=None, description="Enhanced caption models in priority order; unset = every model present."
    )
    max_workers: int = Field(default=6, ge=1, le=64, description="Concurrent writes per asset.")
    partitions_in_parallel: int = Field(
        default=PARTITIONS_IN_PARALLEL,
        ge=1,
        le=16,
        description=(
            "Partitions of a run written at once: one partition's round trips (S3) and reading overlap "
            "another's writing; each holds its own read of the input (clip_assets/engine/batches.py)."
        ),
    )
    read_ahead: bool = Field(
        default=READ_AHEAD,
        description=(
            "Written one at a time, the next partition is found and its input inspected while this one is "
            "written (one more input in memory); off: each partition's reading waits for the one before."
        ),
    )
    parallel_backend: str = Field(
        default="threads",
        description=(
            "Where a run's partitions are written: 'threads' (in the run's process, partitions_in_parallel at "
            "once) or 'ray' (each a Ray task on the cluster at RAY_ADDRESS, retried when its node dies: "
            "docs/deployment.md, 'On a Ray cluster')."
        ),
    )
    ray_cpus_per_partition: float = Field(
        default=0.5, gt=0, description="CPUs each partition's Ray task asks for (parallel_backend 'ray')."
    )
    input_path: str = Field(default="", description="Prefix removed from video paths in processed_videos/.")
    verify_unchanged_outputs: bool = Field(
        default=True,
        description=(
            "Re-run of an unchanged partition: stat every object its manifests record (a HEAD each on S3) "
            "and rewrite what was changed or removed. Off: trust the manifests (one read per family), and "
            "leave damage to the asset checks."
        ),
    )

    def to_settings(self, output_location: str) -> WriterSettings:
        return WriterSettings(
            upload_clips=self.upload_clips,
            dry_run=self.dry_run,
            generate_embeddings=self.generate_embeddings,
            generate_previews=self.generate_previews,
            generate_captions=self.generate_captions,
            embedding_algorithm=self.embedding_algorithm,
            embedding_version=self.embedding_version,
            caption_models=tuple(self.caption_models) if self.caption_models is not None else None,
            enhanced_caption_models=(
                tuple(self.enhanced_caption_models) if self.enhanced_caption_models is not None else None
            ),
            max_workers=self.max_workers,
            input_path=self.input_path,
            output_location=output_location,
            verify_unchanged_outputs=self.verify_unchanged_outputs,
            parallel_backend=self.parallel_backend,
            ray_cpus_per_partition=self.ray_cpus_per_partition,
        )
