"""The `intact` asset checks: they pass on fresh output, name each damaged artifact, and pass again after repair."""

import hashlib
import io
import json
import os
import pickle

from dagster import Definitions
from PIL import Image

from clip_assets.components.resources import WriterSettingsResource
from clip_assets_tests.support.dataset import (
    FAMILY_ASSETS,
    build_resources,
    output_checks,
    processed_videos,
    verify_outputs,
)
from clip_assets_tests.support.factories import make_clips, write_video

KEY = "cam1/street walk.mp4"
# Every family has an `intact` check; a run that evaluated fewer is itself a failure.
ALL_FAMILIES = ["clip_embeddings", "clip_files", "clip_metadata", "clip_previews", "video_summaries"]


def run_checks(instance, inbox, output, partition_key=KEY):
    """The `verify_outputs` job for one partition (as a run tag, the UI's way), or for all with None."""
    definitions = Definitions(
        assets=[processed_videos, *FAMILY_ASSETS],
        asset_checks=output_checks,
        jobs=[verify_outputs],
        resources=build_resources(str(inbox), str(output), WriterSettingsResource(input_path="/videos")),
    )
    job = definitions.resolve_job_def("verify_outputs")
    tags = {"dagster/partition": partition_key} if partition_key else {}
    result = job.execute_in_process(tags=tags, instance=instance, raise_on_error=False)
    evaluations = {}
    for event in result.get_asset_check_evaluations():
        metadata = {k: v.value for k, v in event.metadata.items()}
        evaluations[event.asset_key.to_user_string()] = (event.passed, event.description, metadata)
    return evaluations


def written(inbox, output, run_partition, **options):
    clips = make_clips(3, filtered=[1], **options)
    write_video(inbox / f"{KEY}.parquet", clips)
    assert run_partition(KEY).success
    return clips


def test_fresh_output_passes_every_check(instance, inbox, output, run_partition):
    written(inbox, output, run_partition)
    evaluations = run_checks(instance, inbox, output)
    assert sorted(evaluations) == ALL_FAMILIES
    for family, (passed, description, metadata) in evaluations.items():
        assert passed, (family, description)
        assert metadata["objects_verified"] > 0 and metadata["problems"] == 0


def test_a_truncated_clip_fails_its_check_by_name_and_rematerializing_repairs_it(
    instance, inbox, output, run_partition, reliability
):
    clips = written(inbox, output, run_partition)
    damaged = output / f"clips/{clips[0].uuid}.mp4"
    damaged.write_bytes(damaged.read_bytes()[:300])
    evaluations = run_checks(instance, inbox, output)
    passed, description, metadata = evaluations["clip_files"]
    assert not passed and metadata["problems"] == 1
    assert f"clips/{clips[0].uuid}.mp4: 300 bytes, the manifest recorded {len(clips[0].mp4)}" in description
    assert f"clips/{clips[0].uuid}.mp4" in metadata["damaged"]
    assert evaluations["clip_metadata"][0] and evaluations["video_summaries"][0]  # the others are unharmed

    assert run_partition(KEY).success
    assert damaged.read_bytes() == clips[0].mp4
    repaired = run_checks(instance, inbox, output)
    assert sorted(repaired) == ALL_FAMILIES  # an empty result would make `all` pass vacuously
    assert all(passed for passed, _, _ in repaired.values()), repaired
    reliability.record(
        "fault",
        "output truncated by hand after writing",
        tried=1,
        handled=1,
        nothing_lost="the check named the file; re-materializing restored it byte for byte",
    )


def test_same_size_corruption_and_missing_files_are_found(instance, inbox, output, run_partition):
    clips = written(inbox, output, run_partition)
    preview = output / f"previews/{clips[0].uuid}/0_4.webp"
    data = bytearray(preview.read_bytes())
    data[-5] ^= 0xFF
    preview.write_bytes(bytes(data))
    (output / f"metas/v0/{clips[2].uuid}.json").unlink()
    evaluations = run_checks(instance, inbox, output)
    assert (
        evaluations["clip_previews"][1]
        == f"previews/{clips[0].uuid}/0_4.webp: content differs from the recorded sha256"
    )
    assert evaluations["clip_metadata"][1] == f"metas/v0/{clips[2].uuid}.json: missing"


def replace_with_agreeing_manifest(output, family, key, data):
    """Swap a stored file for `data` and make its manifest record exactly those bytes, as someone with
    write access could: only the family's own decoding can tell then."""
    (output / key).write_bytes(data)
    (manifest_path,) = (output / "_clip_assets/manifests" / family).iterdir()
    doc = json.loads(manifest_path.read_text())
    doc["artifacts"][key].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    manifest_path.write_text(json.dumps(doc))


def test_bytes_that_match_no_promise_are_reported_not_decoded_blindly(instance, inbox, output, run_partition):
    """A replaced pickle that would run code when unpickled is refused."""
    clips = written(inbox, output, run_partition)
    marker = output.parent / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = pickle.dumps(Exploit())
    replace_with_agreeing_manifest(output, "clip_embeddings", f"ce1_embd/{clips[0].uuid}.pickle", evil)
    evaluations = run_checks(instance, inbox, output)
    passed, description, _ = evaluations["clip_embeddings"]
    assert not passed and "refusing to load posix.system" in description
    assert not marker.exists()


def test_a_garbage_mp4_and_a_png_posing_as_webp_fail_their_checks_by_name(instance, inbox, output, run_partition):
    """Size and sha256 agree with the manifest, so only decoding the MP4 and the WebP can find them."""
    clips = written(inbox, output, run_partition)
    mp4_key = f"clips/{clips[0].uuid}.mp4"
    garbage = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40  # an MP4's first box, then noise
    replace_with_agreeing_manifest(output, "clip_files", mp4_key, garbage)
    webp_key = min(p.relative_to(output).as_posix() for p in (output / f"previews/{clips[0].uuid}").iterdir())
    png = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(png, format="PNG")
    replace_with_agreeing_manifest(output, "clip_previews", webp_key, png.getvalue())

    evaluations = run_checks(instance, inbox, output)
    passed, description, metadata = evaluations["clip_files"]
    assert not passed and metadata["problems"] == 1
    assert description.startswith(f"{mp4_key}: not a usable MP4"), description
    passed, description, metadata = evaluations["clip_previews"]
    assert not passed and metadata["problems"] == 1
    assert description.startswith(f"{webp_key}: does not decode as WebP"), description


def test_a_sound_document_that_contradicts_its_file_name_fails_the_cross_check(instance, inbox, output, run_partition):
    """Valid JSON, recorded in the manifest: only the cross-check between name and content finds it."""
    clips = written(inbox, output, run_partition)
    key = f"metas/v0/{clips[0].uuid}.json"
    doc = json.loads((output / key).read_bytes())
    doc["span_uuid"] = clips[2].uuid
    replace_with_agreeing_manifest(output, "clip_metadata", key, json.dumps(doc).encode())
    passed, description, metadata = run_checks(instance, inbox, output)["clip_metadata"]
    assert not passed and metadata["problems"] == 1
    assert description == f"{key}: span_uuid {clips[2].uuid!r} does not match the file name"


def test_a_partition_never_materialized_fails_its_checks(instance, inbox, output):
    write_video(inbox / f"{KEY}.parquet", make_clips(1))
    instance.add_dynamic_partitions("processed_videos", [KEY])
    evaluations = run_checks(instance, inbox, output)
    assert sorted(evaluations) == ALL_FAMILIES
    assert all(not passed and "never materialized" in description for passed, description, _ in evaluations.values())


def test_a_run_without_partition_verifies_every_partition(instance, inbox, output, run_partition):
    for name in ("a.mp4", "b.mp4"):
        clips = make_clips(2, source_video=f"/videos/{name}")
        write_video(inbox / f"{name}.parquet", clips, source_video=f"/videos/{name}")
        assert run_partition(name).success
    damaged = next((output / "clips").iterdir())
    damaged.write_bytes(b"")
    evaluations = run_checks(instance, inbox, output, partition_key=None)
    passed, description, metadata = evaluations["clip_files"]
    assert not passed and metadata["partitions"] == 2 and metadata["problems"] == 1
    assert f"clips/{damaged.name}: 0 bytes" in description
    assert all(evaluations[family][0] for family in ("clip_previews", "clip_metadata", "video_summaries"))


def test_a_failure_stays_until_its_partition_is_repaired(instance, inbox, output, run_partition):
    """A check of other partitions that pass must not turn the check green while damage it found is still there."""
    clips = {}
    for name in ("a.mp4", "b.mp4"):
        clips[name] = make_clips(2, source_video=f"/videos/{name}")
        write_video(inbox / f"{name}.parquet", clips[name], source_video=f"/videos/{name}")
        assert run_partition(name).success
    damaged = f"metas/v0/{clips['a.mp4'][0].uuid}.json"
    (output / damaged).write_bytes(b"{}")
    assert not run_checks(instance, inbox, output, partition_key="a.mp4")["clip_metadata"][0]

    later = run_checks(instance, inbox, output, partition_key="b.mp4")
    passed, description, metadata = later["clip_metadata"]
    assert not passed and description.startswith(damaged), description
    assert metadata["partitions_checked"] == ["a.mp4", "b.mp4"] and metadata["partitions_damaged"] == 1
    assert all(later[family][0] for family in ALL_FAMILIES if family != "clip_metadata")

    assert run_partition("a.mp4").success  # rewrites the damaged document
    repaired = run_checks(instance, inbox, output, partition_key="b.mp4")
    assert sorted(repaired) == ALL_FAMILIES
    assert all(passed for passed, _, _ in repaired.values()), repaired
    assert repaired["clip_metadata"][2]["partitions_checked"] == ["a.mp4", "b.mp4"]
    assert not (output / "_clip_assets/checks/clip_metadata.json").exists()


def test_every_successful_curate_run_is_followed_by_its_checks(instance, inbox, output, run_partition):
    from dagster import DagsterEventType, build_run_status_sensor_context

    from clip_assets_tests.support.dataset import verify_after_curate

    write_video(inbox / f"{KEY}.parquet", make_clips(2))
    run = run_partition(KEY)
    success = next(e for e in run.all_events if e.event_type == DagsterEventType.RUN_SUCCESS)
    context = build_run_status_sensor_context(
        sensor_name="verify_after_curate", dagster_instance=instance, dagster_run=run.dagster_run, dagster_event=success
    )
    request = verify_after_curate(context)
    assert request.tags == {"dagster/partition": KEY} and request.run_key == f"verify:{run.run_id}"
    assert verify_after_curate.job_name == "verify_outputs"
