"""`clip-assets`: make sample input, ingest real video, register partitions, backfill them, run the demo."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from clip_assets.components.environment import (
    DATA_DIR,
    EMBEDDING_ALGORITHM_VAR,
    INBOX_VAR,
    INPUT_PATH_VAR,
    OUTPUT_VAR,
    PARTITIONS_PER_RUN_VAR,
    configured,
)


@click.group()
def main() -> None:
    """Turn processed videos into NeMo Curator-compatible curated outputs, as Dagster assets."""


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def sample(directory: Path) -> None:
    """Write a few short synthetic test-pattern videos into DIRECTORY."""
    from clip_assets.producer.synthetic import write_sample_videos

    for path in write_sample_videos(directory):
        click.echo(path)


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--inbox",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Inbox folder (default: ${INBOX_VAR} or {configured(INBOX_VAR)}).",
)
@click.option(
    "--input-root",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Name processed videos by their path below this folder (default: below each folder argument).",
)
@click.option("--clip-len", type=float, default=2.0, show_default=True, help="Clip length in seconds.")
@click.option("--stride", type=float, default=2.0, show_default=True, help="Seconds between clip starts.")
@click.option("--min-clip-len", type=float, default=1.0, show_default=True, help="Shorter last clips are dropped.")
@click.option("--clips-per-chunk", type=int, default=0, show_default=True, help="Clips per chunk (0: no chunks).")
@click.option(
    "--min-frame-difference",
    type=float,
    default=0.5,
    show_default=True,
    help="Clips whose mean frame difference (grey levels, 0-255) is below this are filtered as still. "
    "Not NeMo's motion-vector threshold: that scale is about 0.001-0.02.",
)
@click.option("--no-progress", is_flag=True, help="Do not show progress bars.")
@click.option("--skip-up-to-date", is_flag=True, help="Skip videos whose processed file is newer than the video.")
def ingest(
    videos: tuple[Path, ...],
    inbox: Path | None,
    input_root: Path | None,
    clip_len: float,
    stride: float,
    min_clip_len: float,
    clips_per_chunk: int,
    min_frame_difference: float,
    no_progress: bool,
    skip_up_to_date: bool,
) -> None:
    """Turn VIDEOS (files or folders) into processed-video files in the inbox."""
    from clip_assets.media.probe import MediaError
    from clip_assets.producer.ingest import ingest_paths
    from clip_assets.producer.planning import IngestSettings

    target = inbox or Path(configured(INBOX_VAR))
    try:
        settings = IngestSettings(
            clip_len_s=clip_len,
            stride_s=stride,
            min_clip_len_s=min_clip_len,
            clips_per_chunk=clips_per_chunk,
            min_frame_difference=min_frame_difference,
        )
        written = ingest_paths(
            list(videos),
            target,
            input_root=input_root,
            settings=settings,
            progress=not no_progress,
            skip_up_to_date=skip_up_to_date,
        )
    except (MediaError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    for path in written:
        click.echo(path)


@main.command()
@click.option(
    "--inbox", default=None, help=f"Inbox folder or s3:// URL (default: ${INBOX_VAR} or {configured(INBOX_VAR)})."
)
def discover(inbox: str | None) -> None:
    """Register every complete processed video in the inbox as a partition of the instance at $DAGSTER_HOME."""
    from dagster import DagsterInstance

    from clip_assets.components.names import DatasetNames
    from clip_assets.components.resources import s3_connection
    from clip_assets.engine.discovery import register
    from clip_assets.storage import open_storage

    storage = open_storage(inbox or configured(INBOX_VAR), s3_connection(configured).storage_options())
    result, new_keys = register(DagsterInstance.get(), storage, DatasetNames().partitions)
    for video in result.videos:
        click.echo(f"{'added  ' if video.partition_key in new_keys else 'known  '} {video.partition_key}")
    for key in result.incomplete:
        click.echo(f"skipped {key} (incomplete: no readable Parquet footer)", err=True)
    for waiting in result.waiting:
        click.echo(f"waiting {waiting}", err=True)
    click.echo(f"{len(result.videos)} processed videos in {storage.root}, {len(new_keys)} new partitions", err=True)


@main.command()
@click.option(
    "--output", default=None, help=f"Output folder or s3:// URL (default: ${OUTPUT_VAR} or {configured(OUTPUT_VAR)})."
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document: a list of failed partitions and their errors."
)
def failures(output: str | None, as_json: bool) -> None:
    """List the partitions whose last run failed, and why: file, row, field, message, time and run id.

    Read from the output's failure records (_clip_assets/video_errors/), not from run logs; a partition
    leaves the list once it is written successfully. Exits 1 when any partition failed.
    """
    import json

    from clip_assets.cli.failures import failure_table
    from clip_assets.components.resources import s3_connection
    from clip_assets.engine.failures import load_failures
    from clip_assets.storage import open_storage

    storage = open_storage(output or configured(OUTPUT_VAR), s3_connection(configured).storage_options())
    found = list(load_failures(storage))
    if as_json:
        click.echo(json.dumps([json.loads(failure.to_bytes()) for failure in found], indent=2))
    else:
        click.echo(failure_table(found))
        click.echo(f"{len(found)} failed partitions in {storage.root}", err=True)
    sys.exit(1 if found else 0)


@main.command()
@click.argument("partitions", nargs=-1)
@click.option("--all", "all_partitions", is_flag=True, help="Every registered partition.")
@click.option(
    "--per-run",
    type=click.IntRange(min=1),
    default=None,
    help=f"Partitions per run (default: ${PARTITIONS_PER_RUN_VAR} or {configured(PARTITIONS_PER_RUN_VAR)}).",
)
def backfill(partitions: tuple[str, ...], all_partitions: bool, per_run: int | None) -> None:
    """Materialize PARTITIONS (or --all) in batched runs in this process, recorded in $DAGSTER_HOME's instance.

    For CI and scripts: no daemon needed; the exit status says whether every partition succeeded.
    """
    from dagster import DagsterInstance

    from clip_assets.cli.backfill import run_backfill

    if bool(partitions) == all_partitions:
        raise click.UsageError("give partition keys or --all, not both and not neither")
    try:
        ok = run_backfill(
            DagsterInstance.get(),
            None if all_partitions else list(partitions),
            per_run or int(configured(PARTITIONS_PER_RUN_VAR)),
            click.echo,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("video_key")
@click.option(
    "--output", default=None, help=f"Output folder or s3:// URL (default: ${OUTPUT_VAR} or {configured(OUTPUT_VAR)})."
)
def remove(video_key: str, output: str | None) -> None:
    """Remove VIDEO_KEY (a partition key) from the dataset: its output files, manifests and claim, its rows in
    the clip index and vector table, and its partition in the instance at $DAGSTER_HOME.

    Remove or keep its processed-video file out of the inbox too, or a change to it curates it again;
    re-materialize near_duplicates, training_shards and clip_gallery (their automation does) to drop
    it from those.
    """
    from dagster import DagsterInstance

    from clip_assets.components.names import DatasetNames
    from clip_assets.components.resources import s3_connection
    from clip_assets.dataset.update import update_dataset_tables
    from clip_assets.engine.removal import remove_partition
    from clip_assets.families import FAMILIES
    from clip_assets.storage import open_storage

    storage = open_storage(output or configured(OUTPUT_VAR), s3_connection(configured).storage_options())
    partitions = DatasetNames().partitions
    instance = DagsterInstance.get()
    known = instance.get_dynamic_partitions(partitions)
    removal = remove_partition(storage, video_key, FAMILIES)
    if not removal.found and video_key not in known:
        raise click.ClickException(f"{video_key!r} is neither a partition nor has outputs in {storage.root}")
    for family, count in sorted(removal.files.items()):
        click.echo(f"removed {count:6d} files of {family}")
    if removal.kept_shared:
        click.echo(f"kept {len(removal.kept_shared)} files another partition also records", err=True)
    update = update_dataset_tables(storage, [video_key])
    click.echo(f"removed {update.index.deleted} clip index rows and {update.vectors.deleted} vectors")
    if video_key in known:
        instance.delete_dynamic_partition(partitions, video_key)
        click.echo(f"deleted partition {video_key}")


@main.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(DATA_DIR),
    show_default=True,
    help="Where sample videos, inbox and output go.",
)
def demo(workdir: Path) -> None:
    """Sample videos -> ingest -> discover -> the curate_videos job for every partition, in a temporary
    Dagster home, on local storage."""
    from clip_assets.cli.demo import run_demo
    from clip_assets.instance.storages import use_embedded_instance
    from clip_assets.producer.descriptor import COLOR_GRID_ALGORITHM

    os.environ.setdefault(INBOX_VAR, str(workdir / "inbox"))
    os.environ.setdefault(OUTPUT_VAR, str(workdir / "output"))
    # The ingested videos record their absolute path, as upstream pipelines do; strip the demo folder.
    os.environ.setdefault(INPUT_PATH_VAR, str((workdir / "videos").resolve()))
    # The sample videos carry an honest colour-grid descriptor, not Cosmos-Embed1: write that one.
    os.environ.setdefault(EMBEDDING_ALGORITHM_VAR, COLOR_GRID_ALGORITHM)
    with (
        tempfile.TemporaryDirectory(prefix="clip-assets-dagster-home-") as home,
        use_embedded_instance(Path(home)) as instance,
    ):
        ok = run_demo(workdir, instance, echo=click.echo)
    sys.exit(0 if ok else 1)
