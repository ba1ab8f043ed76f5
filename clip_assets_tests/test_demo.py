"""The README's first command, as a new user runs it: every asset built, the UI one command away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lance
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from clip_assets.producer.synthetic import PLANTED_DUPLICATE, PLANTED_DUPLICATE_OF, SAMPLE_ANNOTATIONS

BIN = Path(sys.executable).parent


def demo(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME" and not k.startswith("CLIP_ASSETS_")}
    return subprocess.run(
        [str(BIN / "clip-assets"), "demo"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_demo_builds_the_whole_dataset_and_leaves_its_runs_for_the_ui(tmp_path):
    first = demo(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "demo succeeded" in first.stdout and "Traceback" not in first.stderr
    data = tmp_path / "clip-assets-data"
    output = data / "output"
    assert (output / "dataset/clip_index.lance").is_dir()
    assert list((output / "training_shards").glob("*.tar"))
    assert (output / "gallery/index.html").is_file()

    # The runs are in the demo's Dagster home, which .env hands to `dagster dev` (and the CLI).
    home = data / "dagster_home"
    assert f"DAGSTER_HOME={home}" in (tmp_path / ".env").read_text()
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_run_records(RunsFilter())
        assert {r.dagster_run.job_name for r in runs} == {
            "curate_videos",
            "verify_outputs",
            "index_clips",
            "build_dataset",
        }
        assert all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in runs)

    # The data exercises the dataset layer: captions and scores under the index's names.
    clips = lance.dataset(str(output / "dataset/clip_index.lance")).to_table().to_pylist()
    passed = [c for c in clips if c["passed"]]
    captions = {c["partition_key"]: {caption["text"] for caption in c["captions"]} for c in passed}
    assert captions["cam2/bouncing box.mp4"] == {SAMPLE_ANNOTATIONS["cam2/bouncing box.mp4"].caption}
    assert {c["aesthetic_score"] for c in passed if c["partition_key"] == "cam2/bouncing box.mp4"} == {4.6}

    # The planted re-upload is found as a near-duplicate of the clip it copies; no distinct clip is.
    duplicates = parquet_rows(output / "dataset/near_duplicates.parquet")
    removed = {row["clip_id"] for row in duplicates if not row["kept"]}
    by_id = {c["clip_id"]: c for c in clips}
    assert [by_id[clip_id]["partition_key"] for clip_id in removed] == [PLANTED_DUPLICATE]
    shard_index = json.loads((output / "training_shards/index.json").read_text())
    in_shards = {clip_id for shard in shard_index["shards"] for clip_id in shard["clip_ids"]}
    assert in_shards == {c["clip_id"] for c in passed} - removed
    assert any(by_id[c]["partition_key"] == PLANTED_DUPLICATE_OF for c in in_shards)

    # The DuckDB line the demo prints runs as printed and answers.
    line = next(line.strip() for line in first.stdout.splitlines() if line.strip().startswith("python -c"))
    answered = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert answered.returncode == 0, answered.stderr
    assert "│     2 │" in answered.stdout  # the box's two clips of 2 s

    second = demo(tmp_path)  # again: nothing upstream changed, so nothing is written
    assert second.returncode == 0, second.stderr[-3000:]
    assert "demo succeeded" in second.stdout


def parquet_rows(path: Path) -> list[dict[str, object]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
