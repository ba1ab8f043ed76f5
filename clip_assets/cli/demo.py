"""The README's first command: real video in, the main job run for every partition, outputs summarised."""

from __future__ import annotations

import json
import os
import shlex
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance

from clip_assets import layout
from clip_assets.cli.backfill import QUIET, run_backfill
from clip_assets.components.environment import (
    EMBEDDING_ALGORITHM_VAR,
    INBOX_VAR,
    INPUT_PATH_VAR,
    OUTPUT_VAR,
    PARTITIONS_PER_RUN_VAR,
    configured,
)
from clip_assets.components.names import DatasetNames
from clip_assets.engine.discovery import register
from clip_assets.producer.ingest import ingest_paths
from clip_assets.producer.synthetic import write_sample_videos
from clip_assets.storage import LocalStorage

EXPORTED = (INBOX_VAR, OUTPUT_VAR, INPUT_PATH_VAR, EMBEDDING_ALGORITHM_VAR)


def run_demo(workdir: Path, instance: DagsterInstance, echo: Callable[[str], None]) -> bool:
    from clip_assets.definitions import defs

    videos = workdir / "videos"
    if not videos.is_dir():  # a second demo run reuses them, so nothing upstream changes
        write_sample_videos(videos)
    echo(f"sample videos in {videos}")
    inbox = LocalStorage(configured(INBOX_VAR))
    ingest_paths([videos], Path(inbox.root), input_root=videos, progress=True, skip_up_to_date=True)
    result, _ = register(instance, inbox, DatasetNames().partitions)
    echo(f"partitions: {', '.join(v.partition_key for v in result.videos)}")
    per_run = int(configured(PARTITIONS_PER_RUN_VAR))
    ok = run_backfill(instance, [v.partition_key for v in result.videos], per_run, echo)
    summary_run = defs.resolve_job_def(DatasetNames().name("summarize_dataset")).execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False
    )
    ok &= summary_run.success
    output = LocalStorage(configured(OUTPUT_VAR))
    families = Counter(info.key.split("/")[0] for info in output.list() if not info.key.startswith("_"))
    echo(f"output tree {output.root}:")
    for folder, count in sorted(families.items()):
        echo(f"  {folder + '/':<34}{count:>5} files")
    if output.stat(layout.dataset_summary_key()):
        summary = json.loads(output.read(layout.dataset_summary_key()))
        echo(
            f"dataset: {summary['videos']} videos, {summary['clips_passed']} passed / {summary['clips_filtered']} "
            f"filtered clips, {summary['clip_hours'] * 3600:.1f} s, embedding coverage "
            f"{summary['embedding_coverage']:.0%}"
        )
    echo("demo " + ("succeeded" if ok else "FAILED"))
    settings = " ".join(f"{name}={shlex.quote(os.environ[name])}" for name in EXPORTED if name in os.environ)
    echo(f"explore it in the UI (its sensor registers the inbox): {settings} dagster dev -m clip_assets.definitions")
    return ok
