"""`clip-assets`: list the datasets, make sample input, ingest real video, register partitions, backfill them,
list failures, remove a video, run the demo.

Every command works on one dataset of the code location (`--dataset NAME`, NAME its key prefix; optional
where there is one dataset, or for the unprefixed one) and takes its inbox, output, storage options,
settings and partitions from that dataset's defs.yaml. A mistake is one line naming it and what to do,
exit status 2 (1 when the work itself failed); `--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from clip_assets.cli.errors import UsageProblem, one_line
from clip_assets.cli.text import text_table
from clip_assets.components.environment import DATA_DIR, PARTITIONS_PER_RUN_VAR

if TYPE_CHECKING:
    from clip_assets.cli.location import Dataset
    from clip_assets.storage import Storage

Command = TypeVar("Command", bound=Callable[..., Any])


class ClipAssetsGroup(click.Group):
    """Turns any error into one line on stderr and a non-zero exit; `--debug` lets it through."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.UsageError):
            raise
        except click.ClickException as exc:
            if _debugging(ctx):
                raise
            click.echo(f"clip-assets: error: {one_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            if _debugging(ctx):
                raise
            click.echo(f"clip-assets: error: {one_line(exc)} (--debug shows where)", err=True)
            sys.exit(1)


def _debugging(ctx: click.Context) -> bool:
    return bool(ctx.find_root().params.get("debug"))


@click.group(cls=ClipAssetsGroup)
@click.version_option(package_name="clip-assets", prog_name="clip-assets")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of one line.")
@click.option(
    "-m",
    "--module",
    envvar="CLIP_ASSETS_MODULE",
    default="clip_assets.definitions",
    show_default=True,
    help="The code location whose datasets the commands use (its `defs`, loaded from a defs folder).",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, module: str) -> None:
    """Turn processed videos into NeMo Curator-compatible curated outputs and a curated dataset, as Dagster assets."""
    from clip_assets.cli.home import env_file_applied

    del debug  # read through the context by ClipAssetsGroup
    ctx.with_resource(env_file_applied())
    ctx.obj = module


def dataset_option(command: Command) -> Command:
    """`--dataset NAME`, resolved to the code location's dataset and passed on as `dataset`."""

    @wraps(command)
    def with_dataset(*args: Any, dataset_name: str | None, **kwargs: Any) -> Any:
        from clip_assets.cli.location import load_location

        dataset = load_location(click.get_current_context().find_root().obj).select(dataset_name)
        return command(*args, dataset=dataset, **kwargs)

    option = click.option(
        "--dataset",
        "dataset_name",
        default=None,
        metavar="NAME",
        help="The dataset (its key prefix, as its defs.yaml writes it); optional with one dataset, or for the "
        "unprefixed one. `clip-assets datasets` lists them.",
    )
    return option(with_dataset)  # type: ignore[return-value]


@main.command()
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """List the code location's datasets: name, inbox, output, registered partitions, where each is defined."""
    from clip_assets.cli.home import dagster_instance
    from clip_assets.cli.location import load_location

    location = load_location(ctx.find_root().obj)
    with dagster_instance(_note) as instance:
        rows = [("dataset", "inbox", "output", "partitions", "defined in")]
        for component in location.datasets:
            dataset = location.select(component.names.dataset)
            count = len(instance.get_dynamic_partitions(dataset.names.partitions))
            name = dataset.names.dataset or "(default)"
            rows.append((name, dataset.root("inbox"), dataset.root("output"), str(count), component.source))
    click.echo(text_table(rows))


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def sample(directory: Path) -> None:
    """Write a few short synthetic test-pattern videos (and their annotations) into DIRECTORY."""
    from clip_assets.producer.synthetic import write_sample_videos

    for path in write_sample_videos(directory):
        click.echo(path)


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@dataset_option
@click.option("--inbox", default=None, help="Inbox folder or URL (default: the dataset's inbox).")
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
    dataset: Dataset,
    inbox: str | None,
    input_root: Path | None,
    clip_len: float,
    stride: float,
    min_clip_len: float,
    clips_per_chunk: int,
    min_frame_difference: float,
    no_progress: bool,
    skip_up_to_date: bool,
) -> None:
    """Turn VIDEOS (files or folders) into processed-video files in the dataset's inbox (a folder or a store)."""
    from clip_assets.media.probe import MediaError
    from clip_assets.producer.ingest import ingest_paths
    from clip_assets.producer.planning import IngestSettings

    try:
        settings = IngestSettings(
            clip_len_s=clip_len,
            stride_s=stride,
            min_clip_len_s=min_clip_len,
            clips_per_chunk=clips_per_chunk,
            min_frame_difference=min_frame_difference,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    with dataset.storage("inbox", inbox) as storage:
        try:
            written = ingest_paths(
                list(videos),
                storage,
                input_root=input_root,
                settings=settings,
                progress=not no_progress,
                skip_up_to_date=skip_up_to_date,
            )
        except (MediaError, ValueError, FileNotFoundError) as exc:
            raise click.ClickException(str(exc)) from None
    for location in written:
        click.echo(location)


@main.command()
@dataset_option
@click.option("--inbox", default=None, help="Inbox folder or URL (default: the dataset's inbox).")
def discover(dataset: Dataset, inbox: str | None) -> None:
    """Register every complete processed video in the dataset's inbox as a partition of that dataset."""
    from clip_assets.cli.home import dagster_instance
    from clip_assets.engine.discovery import register

    with dataset.storage("inbox", inbox) as storage, dagster_instance(_note) as instance:
        _must_exist(storage, "inbox", dataset)
        result, new_keys = register(instance, storage, dataset.names.partitions)
    for video in result.videos:
        click.echo(f"{'added  ' if video.partition_key in new_keys else 'known  '} {video.partition_key}")
    for key in result.incomplete:
        click.echo(f"skipped {key} (incomplete: no readable Parquet footer)", err=True)
    for waiting in result.waiting:
        click.echo(f"waiting {waiting}", err=True)
    click.echo(
        f"{len(result.videos)} processed videos in {storage.root}, {len(new_keys)} new partitions of {dataset.label}",
        err=True,
    )


@main.command()
@dataset_option
@click.option("--output", default=None, help="Output folder or URL (default: the dataset's output).")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document: a list of failed partitions and their errors."
)
def failures(dataset: Dataset, output: str | None, as_json: bool) -> None:
    """List the partitions whose last run failed, and why: file, row, field, message, time and run id.

    Read from the output's failure records (_clip_assets/video_errors/), not from run logs; a partition
    leaves the list once it is written successfully. Exits 1 when any partition failed.
    """
    import json

    from clip_assets.cli.failures import failure_table
    from clip_assets.engine.failures import load_failures

    with dataset.storage("output", output) as storage:
        _must_exist(storage, "output", dataset)
        found = list(load_failures(storage))
    if as_json:
        click.echo(json.dumps([json.loads(failure.to_bytes()) for failure in found], indent=2))
    else:
        click.echo(failure_table(found))
        click.echo(f"{len(found)} failed partitions in {storage.root}", err=True)
    sys.exit(1 if found else 0)


@main.command()
@click.argument("partitions", nargs=-1)
@dataset_option
@click.option("--all", "all_partitions", is_flag=True, help="Every registered partition.")
@click.option(
    "--per-run",
    type=click.IntRange(min=1),
    default=None,
    help=f"Partitions per run (default: the dataset's partitions_per_run, or ${PARTITIONS_PER_RUN_VAR}).",
)
@click.option("--families-only", is_flag=True, help="Write the output families only, not the derived dataset.")
@click.option("--skip-checks", is_flag=True, help="Do not run the `intact` checks over what was written.")
def backfill(
    partitions: tuple[str, ...],
    dataset: Dataset,
    all_partitions: bool,
    per_run: int | None,
    families_only: bool,
    skip_checks: bool,
) -> None:
    """Materialize PARTITIONS (or --all) in batched runs in this process, check them, then bring the dataset
    group up to date (clip index and vectors, near-duplicates, shards, gallery, summary).

    For CI and scripts: no daemon needed; every run is recorded in the Dagster instance, and the exit
    status says whether every partition and check succeeded.
    """
    from clip_assets.cli.backfill import BackfillSteps, run_backfill
    from clip_assets.cli.home import dagster_instance

    if bool(partitions) == all_partitions:
        raise click.UsageError("give partition keys or --all, not both and not neither")
    with dagster_instance(_note) as instance:
        if all_partitions and not instance.get_dynamic_partitions(dataset.names.partitions):
            raise UsageProblem(
                f"no partitions are registered for {dataset.label}: run `clip-assets discover{dataset.flag}` first"
            )
        try:
            ok = run_backfill(
                instance,
                dataset.location.definitions,
                dataset.names,
                None if all_partitions else list(partitions),
                per_run or dataset.partitions_per_run,
                click.echo,
                BackfillSteps(checks=not skip_checks, dataset=not families_only),
            )
        except ValueError as exc:
            raise UsageProblem(f"{exc} (`clip-assets discover{dataset.flag}` registers the inbox's videos)") from None
    sys.exit(0 if ok else 1)


@main.command()
@click.argument("video_key")
@dataset_option
@click.option("--output", default=None, help="Output folder or URL (default: the dataset's output).")
def remove(video_key: str, dataset: Dataset, output: str | None) -> None:
    """Remove VIDEO_KEY (a partition key) from the dataset: its output files, manifests and claim, its rows in
    the clip index and vector table, and its partition in the Dagster instance.

    Remove or keep its processed-video file out of the inbox too, or a change to it curates it again;
    re-materialize near_duplicates, training_shards and clip_gallery (their automation does) to drop
    it from those.
    """
    from clip_assets.cli.home import dagster_instance
    from clip_assets.dataset.update import update_dataset_tables
    from clip_assets.engine.removal import remove_partition
    from clip_assets.families import FAMILIES

    partitions = dataset.names.partitions
    with dataset.storage("output", output) as storage, dagster_instance(_note) as instance:
        known = instance.get_dynamic_partitions(partitions)
        removal = remove_partition(storage, video_key, FAMILIES)
        if not removal.found and video_key not in known:
            raise UsageProblem(
                f"{video_key!r} is neither a partition of {dataset.label} nor has outputs in {storage.root}"
            )
        for family, count in sorted(removal.files.items()):
            click.echo(f"removed {count:6d} files of {family}")
        if removal.kept_shared:
            click.echo(f"kept {len(removal.kept_shared)} files another partition also records", err=True)
        update = update_dataset_tables(storage, [video_key])
        click.echo(f"removed {update.index.deleted} clip index rows and {update.vectors.deleted} vectors")
        if video_key in known:
            instance.delete_dynamic_partition(partitions, video_key)
            click.echo(f"deleted partition {video_key} of {dataset.label}")


@main.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(DATA_DIR),
    show_default=True,
    help="Where sample videos, inbox, output and the demo's Dagster home go.",
)
def demo(workdir: Path) -> None:
    """Sample videos -> ingest -> discover -> every asset (families, checks, the curated dataset), on local
    storage, recorded in a Dagster home under WORKDIR that `dagster dev` then shows."""
    from clip_assets.cli.demo import run_demo

    sys.exit(0 if run_demo(workdir, click.echo) else 1)


def _note(message: str) -> None:
    click.echo(message, err=True)


def _must_exist(storage: Storage, role: str, dataset: Dataset) -> None:
    """A local root that is not there is a misspelt path, not an empty dataset."""
    from clip_assets.storage import url_scheme

    if url_scheme(storage.root) == "file" and not Path(storage.root).is_dir():
        raise UsageProblem(
            f"{role} {storage.root} does not exist ({dataset.label}, {dataset.component.source}): "
            f"check the path, or --{role}"
        )
