"""The README's first command: sample video in, every asset built, what was built shown, the UI one command away.

Sample videos (with annotations: a caption and an aesthetic score each, and one planted re-upload) are
ingested into the default dataset's inbox under the work folder, registered, written, checked, and the
curated dataset is built from them (clip index, vectors, near-duplicates, training shards, gallery,
summary): the same runs a deployment's sensors start, recorded in a Dagster home under the work folder.
A `.env` file in the working directory then points `dagster dev` (and the CLI) at that home and the
demo's settings, as Dagster's own commands read `.env`, so the UI shows the demo's runs and metadata.
"""

from __future__ import annotations

import json
import os
import shlex
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from clip_assets import layout
from clip_assets.cli.backfill import run_backfill
from clip_assets.cli.home import ENV_FILE, HOME_VAR, project_home
from clip_assets.components.environment import EMBEDDING_ALGORITHM_VAR, INBOX_VAR, INPUT_PATH_VAR, OUTPUT_VAR
from clip_assets.engine.discovery import register
from clip_assets.instance.storages import use_embedded_instance
from clip_assets.producer.descriptor import COLOR_GRID_ALGORITHM
from clip_assets.producer.ingest import ingest_paths
from clip_assets.producer.synthetic import (
    PLANTED_DUPLICATE,
    SAMPLE_VIDEOS,
    write_planted_duplicate,
    write_sample_annotations,
    write_sample_videos,
)
from clip_assets.storage import open_storage, read_if_exists

ENV_MARKER = "# Written by `clip-assets demo`"
# The README's question, over the demo's clips: how many clips of 2 s or more show a box?
DUCKDB_LINE = (
    "python -c \"import duckdb, lance; clips = lance.dataset('{index}'); "
    'print(duckdb.sql(\\"SELECT count(*) AS clips FROM clips WHERE duration >= 2 AND '
    "len(list_filter(captions, lambda c: c.text ILIKE '%box%')) > 0\\\"))\""
)


def demo_settings(workdir: Path) -> dict[str, str]:
    """The variables the demo runs with, and that its `.env` hands to `dagster dev`."""
    root = workdir.resolve()
    return {
        HOME_VAR: str(project_home(root)),
        INBOX_VAR: str(root / "inbox"),
        OUTPUT_VAR: str(root / "output"),
        # The ingested videos record their absolute path, as upstream pipelines do; strip the demo folder.
        INPUT_PATH_VAR: str(root / "videos"),
        # The sample videos carry an honest colour-grid descriptor, not Cosmos-Embed1: write that one.
        EMBEDDING_ALGORITHM_VAR: COLOR_GRID_ALGORITHM,
    }


def write_env_file(directory: Path, settings: dict[str, str]) -> bool:
    """`.env` with `settings`, unless a `.env` the demo did not write is there (then it is left alone)."""
    path = directory / ENV_FILE
    if path.exists() and not path.read_text(encoding="utf-8").startswith(ENV_MARKER):
        return False
    lines = [
        f"{ENV_MARKER}: `dagster dev` and `clip-assets` in this folder use the demo's Dagster home and",
        "# settings. Delete this file to go back to Dagster's defaults.",
        *(f"{name}={shlex.quote(value)}" for name, value in settings.items()),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return True


def _sample_input(videos: Path) -> None:
    """The samples, their annotations and the planted re-upload; a second demo reuses what is there."""
    if not all((videos / relative).is_file() for relative in SAMPLE_VIDEOS):
        write_sample_videos(videos)
    write_sample_annotations(videos)
    if not (videos / PLANTED_DUPLICATE).is_file():
        write_planted_duplicate(videos)


def run_demo(workdir: Path, echo: Callable[[str], None]) -> bool:
    settings = demo_settings(workdir)
    os.environ.update(settings)
    from clip_assets.cli.location import load_location

    videos = workdir / "videos"
    _sample_input(videos)
    echo(f"sample videos in {videos}")
    inbox = open_storage(settings[INBOX_VAR])
    ingest_paths([videos], inbox, input_root=videos, progress=True, skip_up_to_date=True)
    dataset = load_location().select(None)
    with use_embedded_instance(Path(settings[HOME_VAR])) as instance:
        result, _ = register(instance, inbox, dataset.names.partitions)
        echo(f"partitions: {', '.join(v.partition_key for v in result.videos)}")
        keys = [v.partition_key for v in result.videos]
        ok = run_backfill(instance, dataset.location.definitions, dataset.names, keys, dataset.partitions_per_run, echo)
    _show(settings[OUTPUT_VAR], echo)
    echo("demo " + ("succeeded" if ok else "FAILED"))
    index = Path(os.path.relpath(Path(settings[OUTPUT_VAR]) / layout.clip_index_key()))
    echo(f"query the clip index with DuckDB:\n  {DUCKDB_LINE.format(index=index.as_posix())}")
    if write_env_file(Path.cwd(), settings):
        echo(f"open the UI on the demo's runs (.env in {Path.cwd()} points it at them): dagster dev")
    else:
        exported = " ".join(f"{name}={shlex.quote(value)}" for name, value in settings.items())
        echo(f"open the UI on the demo's runs (a .env of your own is here, left as it is): {exported} dagster dev")
    return ok


def _show(root: str, echo: Callable[[str], None]) -> None:
    """What was built: the tree's folders, the dataset's figures, where the gallery is."""
    output = open_storage(root)
    folders = Counter(info.key.split("/")[0] for info in output.list() if not info.key.startswith("_"))
    echo(f"output tree {output.root}:")
    for folder, count in sorted(folders.items()):
        echo(f"  {folder + '/':<34}{count:>5} files")
    summary = read_if_exists(output, layout.dataset_summary_key())
    if summary is not None:
        figures = json.loads(summary)
        tables = figures.get("dataset_tables", {})
        echo(
            f"dataset: {figures['videos']} videos, {figures['clips_passed']} passed / {figures['clips_filtered']} "
            f"filtered clips, {figures['clip_hours'] * 3600:.1f} s, caption coverage "
            f"{figures['caption_coverage']:.0%}, embedding coverage {figures['embedding_coverage']:.0%}; "
            f"{tables.get('near_duplicate_groups', 0)} near-duplicate groups, "
            f"{tables.get('training_shard_samples', 0)} clips in {tables.get('training_shards', 0)} training shards"
        )
    echo(f"gallery: {layout.full_location(output.root, layout.gallery_page_key())}")
