"""Faults during a write: a run killed at any point, a full disk, a permission error.

Each leaves no partial file visible and no corrupt manifest, fails (if it fails) with a message naming
the file and the reason, and the next run produces output identical to a clean run.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from clip_assets import layout
from clip_assets.engine.manifest import PartitionManifest
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.dataset import materialize_partition, unrecorded
from clip_assets_tests.support.factories import make_clips, noise_mp4, write_video
from clip_assets_tests.support.partition_process import SHORT_LEASES, kill_when, spawn
from clip_assets_tests.support.processes import unavailable_here

KEY = "v.mp4"


def nemo_files(storage) -> dict[str, bytes]:
    """The NeMo tree, with the output root (in `clip_location`) replaced so two roots compare equal."""
    root = storage.root.encode()
    return {
        i.key: storage.read(i.key).replace(root, b"<root>")
        for i in storage.list()
        if not i.key.startswith("_clip_assets/")
    }


def manifests_parse(storage) -> int:
    found = 0
    for info in storage.list("_clip_assets/manifests/"):
        PartitionManifest.from_bytes(storage.read(info.key))
        found += 1
    return found


@pytest.fixture
def heavy_inbox(tmp_path):
    """A partition whose clips take a while to write: 24 distinct MP4s of about 1.5 MB."""
    inbox = tmp_path / "heavy-inbox"
    clips = make_clips(24, source_video="/videos/v.mp4")
    for index, clip in enumerate(clips):
        clip.mp4 = noise_mp4(1_500_000, seed=index)
    write_video(inbox / f"{KEY}.parquet", clips, source_video="/videos/v.mp4")
    return inbox


def start(inbox: Path, output: str, home: Path, env: dict[str, str] | None = None, prefix: list[str] | None = None):
    return spawn(inbox, output, home, KEY, 1, env, prefix)


def reached(output: Path, clips_written: int) -> bool:
    """The writer has started (0), or at least `clips_written` clip files are visible."""
    if clips_written == 0:
        return (output / "_clip_assets").exists()
    folder = output / "clips"
    return folder.exists() and len(list(folder.iterdir())) >= clips_written


def test_a_run_killed_mid_write_leaves_no_partial_file_and_the_rerun_is_identical(
    tmp_path, heavy_inbox, instance, reliability
):
    assert materialize_partition(instance, KEY, str(heavy_inbox), str(tmp_path / "clean")).success
    clean = nemo_files(LocalStorage(tmp_path / "clean"))
    kill_points = {"before any clip": 0, "after 1 clip": 1, "after 12 clips": 12}
    for name, clips_written in kill_points.items():
        output = tmp_path / f"killed {clips_written}"
        home = tmp_path / f"home {clips_written}"
        process = start(heavy_inbox, str(output), home)
        kill_when(process, lambda root=output, n=clips_written: reached(root, n))
        storage = LocalStorage(output)
        for key, data in nemo_files(storage).items():
            assert data == clean[key], f"{name}: {key} is visible but not complete"
        manifests_parse(storage)
        rerun = start(heavy_inbox, str(output), home)
        assert rerun.wait(timeout=300) == 0, rerun.stdout.read()
        assert nemo_files(storage) == clean, name
    reliability.record(
        "fault",
        "SIGKILL of the run process mid-write (local disk)",
        tried=len(kill_points),
        handled=len(kill_points),
        nothing_lost="every visible file byte-equal to a clean run's, manifests parse, re-run output identical",
    )


def test_a_run_killed_mid_upload_leaves_no_partial_object_on_s3(tmp_path, heavy_inbox, s3, instance, reliability):
    clean = s3.url("clean")
    assert materialize_partition(instance, KEY, str(heavy_inbox), clean, s3=s3.connection).success
    clean_files = nemo_files(s3.storage("clean"))
    env = {
        **SHORT_LEASES,  # the re-run waits out the killed run's lease
        "AWS_ENDPOINT_URL_S3": s3.proxy.url,
        "CLIP_ASSETS_S3_ADDRESSING_STYLE": "path",
    }
    process = start(heavy_inbox, s3.url("killed"), tmp_path / "home", env)
    kill_when(process, lambda: s3.proxy.counts["PutObject"] >= 8)
    storage = s3.storage("killed")
    for key, data in nemo_files(storage).items():
        assert data == clean_files[key], f"{key} is visible but not complete"
    manifests_parse(storage)
    rerun = start(heavy_inbox, s3.url("killed"), tmp_path / "home", env)
    assert rerun.wait(timeout=300) == 0, rerun.stdout.read()
    assert nemo_files(storage) == clean_files
    reliability.record(
        "fault",
        "SIGKILL of the run process mid-upload (S3)",
        tried=1,
        handled=1,
        nothing_lost="every visible object byte-equal to a clean run's, manifests parse, re-run output identical",
    )


@pytest.mark.timeout(900)  # the re-runs wait out the killed runs' leases (SHORT_LEASES)
def test_on_azure_and_gcs_a_run_killed_mid_upload_leaves_no_partial_object_and_no_orphan(
    tmp_path, heavy_inbox, azure, gcs, instance, reliability
):
    """test_a_run_killed_mid_upload_leaves_no_partial_object_on_s3 and leftovers' killed-run case in one,
    on both stores at once, so that the waits for the killed runs' (short) leases overlap: killed
    mid-upload, every visible object is complete; the input then drops the clips the killed run wrote,
    and the re-run gives exactly a clean run's tree of the new input, with no object that no manifest
    records."""
    clips = make_clips(24, source_video="/videos/v.mp4")  # heavy_inbox's clips
    kept = clips[-2:]
    changed_inbox = tmp_path / "changed-inbox"
    write_video(changed_inbox / f"{KEY}.parquet", kept, source_video="/videos/v.mp4")
    reruns, clean_changed = {}, {}
    for cloud in (azure, gcs):
        assert materialize_partition(instance, KEY, str(heavy_inbox), cloud.url("clean")).success
        assert materialize_partition(instance, KEY, str(changed_inbox), cloud.url("clean-changed")).success
        clean = nemo_files(cloud.storage("clean"))
        clean_changed[cloud.name] = nemo_files(cloud.storage("clean-changed"))
        cloud.proxy.reset_counts()
        home = tmp_path / f"home {cloud.name}"
        process = start(heavy_inbox, cloud.url("killed"), home, {**cloud.env, **SHORT_LEASES})
        kill_when(process, lambda cloud=cloud: cloud.writes_under(f"killed/{layout.CLIPS}") >= 3)
        storage = cloud.storage("killed")
        for key, data in nemo_files(storage).items():
            assert data == clean[key], f"{cloud.name}: {key} is visible but not complete"
        manifests_parse(storage)
        assert any(key.startswith(layout.CLIPS) for key in unrecorded(storage))  # what the kill left behind
        reruns[cloud.name] = start(changed_inbox, cloud.url("killed"), home, {**cloud.env, **SHORT_LEASES})

    for cloud in (azure, gcs):
        rerun = reruns[cloud.name]
        assert rerun.wait(timeout=600) == 0, rerun.stdout.read()
        storage = cloud.storage("killed")
        assert nemo_files(storage) == clean_changed[cloud.name]
        assert unrecorded(storage) == []
        dropped = {clip.uuid for clip in clips[:-2]}
        assert [key for key in cloud.keys("killed/") if any(uuid in key for uuid in dropped)] == []
        reliability.record(
            "fault",
            f"SIGKILL of the run process mid-upload, then a changed input ({cloud.label})",
            tried=1,
            handled=1,
            nothing_lost="every visible object byte-equal to a clean run's; the re-run equals a clean run of the "
            "new input, with no object that no manifest records",
        )


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        unavailable_here(f"cannot mount a small tmpfs (run as root): {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_fails_clearly_with_no_partial_file(tmp_path, heavy_inbox, small_disk, instance, reliability):
    assert materialize_partition(instance, KEY, str(heavy_inbox), str(tmp_path / "clean")).success
    clean = nemo_files(LocalStorage(tmp_path / "clean"))
    output = small_disk / "curated"
    result = materialize_partition(instance, KEY, str(heavy_inbox), str(output))
    assert not result.success
    messages = [
        e.event_specific_data.error.cause.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    ]
    assert any("No space left on device" in m and f"{output}/" in m for m in messages), messages
    storage = LocalStorage(output)
    for key, data in nemo_files(storage).items():
        assert data == clean[key], f"{key} is visible but not complete"
    assert not any((output / "_clip_assets/staging").iterdir())  # the failed temp files are gone

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert materialize_partition(instance, KEY, str(heavy_inbox), str(output)).success
    assert nemo_files(storage) == clean
    reliability.record(
        "fault",
        "disk full (ENOSPC) mid-write",
        tried=1,
        handled=1,
        nothing_lost="names file and reason; visible files complete; once space is freed the re-run is identical",
    )


def test_a_permission_error_fails_clearly_and_writes_nothing(tmp_path, heavy_inbox, reliability):
    """Root ignores file modes, so the run drops its DAC-override capabilities, as an unprivileged worker."""
    if shutil.which("setpriv") is None:
        unavailable_here("setpriv (util-linux) is needed to drop capabilities")
    output = Path(tempfile.mkdtemp(dir=tmp_path))
    output.chmod(0o555)
    caps = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}"]
    process = start(heavy_inbox, str(output), tmp_path / "home", prefix=prefix)
    assert process.wait(timeout=300) == 1
    messages = process.stdout.read()
    assert "Permission denied" in messages and str(output) in messages, messages
    assert list(output.iterdir()) == []
    reliability.record(
        "fault",
        "permission denied on the output root",
        tried=1,
        handled=1,
        nothing_lost="every family failed naming the path; nothing written",
    )
