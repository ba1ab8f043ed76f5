"""The CI path, as a user types it: `clip-assets discover`, `dagster asset materialize`, `clip-assets backfill`."""

import json
import os
import subprocess
import sys
from pathlib import Path

from clip_assets_tests.support.factories import make_clips, write_video


def run(args, env, cwd):
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def cli_env(tmp_path, inbox, output, **more):
    """What a CI job sets: a Dagster home of its own, the inbox and output, the input_path prefix."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CLIP_ASSETS_INBOX": str(inbox),
        "CLIP_ASSETS_OUTPUT": str(output),
        "CLIP_ASSETS_INPUT_PATH": "/videos",
        **more,
    }


def test_discover_then_dagster_asset_materialize(tmp_path, inbox, output):
    clips = make_clips(3, filtered=[1])
    write_video(inbox / "cam1/street walk.mp4.parquet", clips)
    (inbox / "cam1/half.mp4.parquet").write_bytes(b"PAR1")
    env = cli_env(tmp_path, inbox, output)
    bin_dir = Path(sys.executable).parent
    discovered = run([str(bin_dir / "clip-assets"), "discover"], env, tmp_path)
    assert discovered.returncode == 0, discovered.stderr
    assert "added   cam1/street walk.mp4" in discovered.stdout
    assert "skipped cam1/half.mp4.parquet (incomplete" in discovered.stderr

    command = [
        str(bin_dir / "dagster"), "asset", "materialize", "-m", "clip_assets.definitions",
        "--select", "group:clip_outputs", "--partition", "cam1/street walk.mp4",
    ]  # fmt: skip
    materialized = run(command, env, tmp_path)
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    video = json.loads((output / "processed_videos/cam1/street walk.mp4.json").read_text())
    assert video["video"] == "/videos/cam1/street walk.mp4"
    assert sorted(p.name for p in (output / "clips").iterdir()) == sorted(
        f"{c.uuid}.mp4" for c in clips if not c.filtered
    )
    assert (output / f"filtered_clips/{clips[1].uuid}.mp4").read_bytes() == clips[1].mp4

    again = run([str(bin_dir / "clip-assets"), "discover"], env, tmp_path)
    assert "known   cam1/street walk.mp4" in again.stdout and "0 new partitions" in again.stderr


def test_workspace_loads_the_code_location_for_dagster_dev(tmp_path):
    """`dagster dev` from the repo root loads the code location through workspace.yaml."""
    repo_root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    command = [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"]
    validated = run(command, env, repo_root)
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert "Validation successful for code location clip_assets" in validated.stderr + validated.stdout


def test_s3_by_configuration_alone(tmp_path, s3):
    """CLIP_ASSETS_INBOX/OUTPUT as s3:// URLs and the standard AWS variables: no code, no run config."""
    clips = make_clips(2)
    write_video(tmp_path / "v.parquet", clips)
    s3.storage("inbox").put("cam1/street walk.mp4.parquet", (tmp_path / "v.parquet").read_bytes())
    env = cli_env(
        tmp_path,
        s3.url("inbox"),
        s3.url("curated"),
        CLIP_ASSETS_S3_ADDRESSING_STYLE="path",
        AWS_ENDPOINT_URL_S3=s3.proxy.url,
    )
    bin_dir = Path(sys.executable).parent
    discovered = run([str(bin_dir / "clip-assets"), "discover"], env, tmp_path)
    assert discovered.returncode == 0, discovered.stderr
    assert "added   cam1/street walk.mp4" in discovered.stdout
    command = [
        str(bin_dir / "dagster"), "asset", "materialize", "-m", "clip_assets.definitions",
        "--select", "group:clip_outputs", "--partition", "cam1/street walk.mp4",
    ]  # fmt: skip
    materialized = run(command, env, tmp_path)
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    stored = s3.storage("curated")
    assert stored.read(f"clips/{clips[0].uuid}.mp4") == clips[0].mp4
    video = json.loads(stored.read("processed_videos/cam1/street walk.mp4.json"))
    assert video["video"] == "/videos/cam1/street walk.mp4"
    assert s3.proxy.counts["PutObject"] > 0


def test_backfill_runs_batches_without_a_daemon_and_reports_failures(tmp_path, inbox, output):
    names = ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"]
    for name in names:
        clips = make_clips(2, source_video=f"/videos/{name}")
        if name == "d.mp4":
            clips[1].span_end = clips[1].span_start  # a bad video: it fails alone
        write_video(inbox / f"{name}.parquet", clips, source_video=f"/videos/{name}")
    env = cli_env(tmp_path, inbox, output)
    bin_dir = Path(sys.executable).parent
    assert run([str(bin_dir / "clip-assets"), "discover"], env, tmp_path).returncode == 0
    backfill = run([str(bin_dir / "clip-assets"), "backfill", "--all", "--per-run", "2"], env, tmp_path)
    assert backfill.returncode == 1, backfill.stderr[-3000:]
    lines = [line for line in backfill.stdout.splitlines() if line.startswith("curate_videos[")]
    assert [line.split(" (")[0] for line in lines] == [
        "curate_videos[a.mp4...b.mp4]",
        "curate_videos[c.mp4...d.mp4]",
        "curate_videos[e.mp4...e.mp4]",
    ]  # 3 runs for 5 partitions, not 5
    assert "FAILED" in lines[1] and "success" in lines[0] and "success" in lines[2]
    assert "d.mp4: ProcessedVideoError" in backfill.stdout and "span_end" in backfill.stdout
    for name in ("a.mp4", "b.mp4", "c.mp4", "e.mp4"):
        assert (output / f"processed_videos/{name}.json").exists()
    assert not (output / "processed_videos/d.mp4.json").exists()


def test_ingest_into_an_s3_inbox_puts_the_file_there_and_nothing_on_disk(tmp_path, s3):
    from clip_assets.producer.synthetic import SAMPLE_VIDEOS
    from clip_assets.producer.synthetic import write_video as write_sample

    video = write_sample(tmp_path / "videos/box.mp4", SAMPLE_VIDEOS["cam2/bouncing box.mp4"], num_frames=24)
    work = tmp_path / "work"
    work.mkdir()
    env = cli_env(
        tmp_path,
        s3.url("inbox"),
        s3.url("curated"),
        CLIP_ASSETS_S3_ADDRESSING_STYLE="path",
        AWS_ENDPOINT_URL_S3=s3.proxy.url,
    )
    bin_dir = Path(sys.executable).parent
    ingested = run([str(bin_dir / "clip-assets"), "ingest", str(video), "--no-progress"], env, work)
    assert ingested.returncode == 0, ingested.stderr
    assert ingested.stdout.strip() == f"{s3.url('inbox')}/box.mp4.parquet"
    assert s3.keys("inbox") == ["box.mp4.parquet"]
    assert list(work.iterdir()) == []  # no ./s3:/bucket/... folder
    flagged = run(
        [str(bin_dir / "clip-assets"), "ingest", str(video), "--inbox", s3.url("other"), "--no-progress"], env, work
    )
    assert flagged.returncode == 0, flagged.stderr
    assert s3.keys("other") == ["box.mp4.parquet"] and list(work.iterdir()) == []
    discovered = run([str(bin_dir / "clip-assets"), "discover"], env, work)
    assert discovered.returncode == 0 and "added   box.mp4" in discovered.stdout
