"""A record of every failed video, in the output: what failed and why, without reading run logs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from clip_assets import layout
from clip_assets.contract import schema
from clip_assets.engine.failures import record_failures
from clip_assets.families import FAMILIES as OUTPUT_FAMILIES
from clip_assets.storage import LocalStorage, StorageError
from clip_assets_tests.support.dataset import materialize_summary
from clip_assets_tests.support.factories import make_clips, write_video

FAMILIES = sorted(family.name for family in OUTPUT_FAMILIES)


def record(output: Path, partition_key: str) -> dict | None:
    """The partition's failure record as JSON, read here (not by the code that writes it), or None."""
    path = output / layout.video_error_key(partition_key)
    return json.loads(path.read_bytes()) if path.exists() else None


def clip_assets(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("clip-assets")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_a_failed_partition_is_recorded_with_file_row_field_time_and_run_and_cleared_once_it_succeeds(
    inbox, output, instance, run_partition
):
    write_video(inbox / "good.mp4.parquet", source_video="/videos/good.mp4", num_clips=2)
    clips = make_clips(3, source_video="/videos/bad.mp4")
    clips[2].span_end = clips[2].span_start - 1
    write_video(inbox / "bad.mp4.parquet", clips, source_video="/videos/bad.mp4")
    before = datetime.now(UTC).replace(microsecond=0)
    assert run_partition("good.mp4").success
    failed_run = run_partition("bad.mp4")
    assert not failed_run.success

    assert record(output, "good.mp4") is None
    failure = record(output, "bad.mp4")
    assert failure is not None and failure["partition"] == "bad.mp4" and failure["format"] == 1
    assert failure["run_id"] == failed_run.run_id
    assert before <= datetime.fromisoformat(failure["time"]) <= datetime.now(UTC)
    (error,) = failure["errors"]  # one bad input fails every family with one error
    assert sorted(error["families"]) == FAMILIES
    assert error["file"] == str(inbox / "bad.mp4.parquet")
    assert (error["row"], error["clip_id"], error["field"]) == (2, clips[2].uuid, schema.SPAN_END)
    assert error["error_type"] == "ProcessedVideoError" and "span_end" in error["message"]

    # Listed by the CLI, as a table and as JSON, from the output alone.
    table = clip_assets("failures", "--output", str(output))
    assert table.returncode == 1  # something failed
    header, row = table.stdout.splitlines()
    assert header.split() == ["partition", "families", "file", "row", "field", "message", "time", "run"]
    assert row.startswith("bad.mp4 ") and f" {schema.SPAN_END} " in row and failed_run.run_id in row
    assert str(inbox / "bad.mp4.parquet") in row
    listed = json.loads(clip_assets("failures", "--output", str(output), "--json").stdout)
    assert [(f["partition"], f["run_id"], f["errors"][0]["row"]) for f in listed] == [("bad.mp4", failed_run.run_id, 2)]

    # The summary shows the failed partition and its reason.
    summary_run = materialize_summary(instance, str(inbox), str(output))
    summary = json.loads((output / layout.dataset_summary_key()).read_text())
    assert summary["failed_partitions"] == 1
    assert summary["top_failure_reasons"] == {f"ProcessedVideoError in {schema.SPAN_END}": 1}
    (event,) = summary_run.get_asset_materialization_events()
    assert event.materialization.metadata["failed_partitions"].value == 1

    # Fixed upstream and written: the record goes, and the CLI has nothing to list.
    clips[2].span_end = clips[2].span_start + 8 / 24
    write_video(inbox / "bad.mp4.parquet", clips, source_video="/videos/bad.mp4")
    assert run_partition("bad.mp4").success
    assert record(output, "bad.mp4") is None
    assert not (output / layout.VIDEO_ERRORS).exists() or list((output / layout.VIDEO_ERRORS).iterdir()) == []
    empty = clip_assets("failures", "--output", str(output))
    assert empty.returncode == 0 and empty.stdout.splitlines()[1:] == []


def test_a_run_of_some_families_keeps_the_errors_of_the_others(tmp_path):
    """Only a family's own successful write clears its error; the record goes with the last one."""
    storage = LocalStorage(tmp_path)
    full = StorageError(28, f"cannot write {storage.root}/metas/v0/x.json: No space left on device")
    record_failures(storage, "v.mp4", "inbox/v.mp4.parquet", {"clip_metadata": full}, FAMILIES, "run-1")
    record_failures(storage, "v.mp4", "inbox/v.mp4.parquet", {}, ["clip_files"], "run-2")
    (kept,) = record(tmp_path, "v.mp4")["errors"]
    assert (kept["families"], kept["error_type"], kept["file"]) == (
        ["clip_metadata"],
        "StorageError",
        "inbox/v.mp4.parquet",
    )
    assert "No space left" in kept["message"]
    record_failures(storage, "v.mp4", "inbox/v.mp4.parquet", {}, ["clip_metadata"], "run-3")
    assert record(tmp_path, "v.mp4") is None
