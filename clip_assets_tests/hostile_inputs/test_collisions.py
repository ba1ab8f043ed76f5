"""Two inputs that collide: the second must fail before writing anything, the first stays untouched."""

from __future__ import annotations

import pytest
from dagster import ExecuteInProcessResult

from clip_assets import layout
from clip_assets.contract import ProcessedVideoError, VideoInfo
from clip_assets.engine.claims import claim_video
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.hostile_corpus import SOURCE, Case, clips_for, key_case, publish
from clip_assets_tests.support.hostile_runs import (
    FAILURE_RECORDS,
    LOCKS,
    difference,
    manifests_of,
    single_run_problems,
    tree_state,
)


def run_second(
    tmp_path, inbox, output, run_partition, first: str, second: str
) -> tuple[ExecuteInProcessResult, list[str]]:
    """Materialize `first` cleanly, then `second`; problems: anything of `second` written, anything else touched."""
    assert run_partition(first).success
    output_before = tree_state(output, skip=(output / LOCKS, output / FAILURE_RECORDS))
    outside_before = tree_state(tmp_path, skip=(output,))
    result = run_partition(second)
    problems = []
    output_after = tree_state(output, skip=(output / LOCKS, output / FAILURE_RECORDS))
    if output_after != output_before:
        problems.append(f"the output changed: {difference(output_before, output_after)}")
    written = manifests_of(output, second)
    if written:
        problems.append(f"{second} has manifests (it wrote files): { {f: len(k) for f, k in written.items()} }")
    if tree_state(tmp_path, skip=(output,)) != outside_before:
        problems.append("files outside the output root changed")
    return result, problems


@pytest.mark.parametrize("variant", ["/videos//collide.mp4", "/videos/./collide.mp4", "/videos/collide.mp4/"])
def test_two_videos_whose_paths_normalize_alike_never_share_an_output(
    tmp_path, inbox, output, run_partition, variant, reliability
):
    """`/videos/collide.mp4` and `variant` both map to processed_videos/collide.mp4.json (and one chunk Parquet)."""
    publish(inbox, "collide-a.mp4", clips_for("collide-a.mp4", 2), source="/videos/collide.mp4")
    publish(inbox, "collide-b.mp4", clips_for("collide-b.mp4", 3), source=variant)
    result, problems = run_second(tmp_path, inbox, output, run_partition, "collide-a.mp4", "collide-b.mp4")
    case = Case("collision: source paths that normalize alike", key_case, SOURCE, key="collide-b.mp4")
    problems += single_run_problems(result, case, inbox, None)
    assert not problems, "\n".join(problems)
    reliability.record(
        "bad input",
        "collision: source paths that normalize alike",
        tried=1,
        handled=1,
        nothing_lost="first partition's files byte-identical; no manifest or file of the second",
    )


def test_a_video_reusing_another_videos_clip_ids_fails_before_writing(
    tmp_path, inbox, output, run_partition, reliability
):
    first = clips_for("reuse-a.mp4")
    publish(inbox, "reuse-a.mp4", first)
    second = clips_for("reuse-b.mp4")
    for mine, theirs in zip(second, first, strict=True):
        mine.uuid = theirs.uuid
    publish(inbox, "reuse-b.mp4", second)
    result, problems = run_second(tmp_path, inbox, output, run_partition, "reuse-a.mp4", "reuse-b.mp4")
    case = Case("collision: clip ids of another video", key_case, "clip_uuid", row=0, key="reuse-b.mp4")
    problems += single_run_problems(result, case, inbox, first[0].uuid)
    assert not problems, "\n".join(problems)
    reliability.record(
        "bad input",
        "collision: clip ids of another video",
        tried=1,
        handled=1,
        nothing_lost="first partition's files byte-identical; no manifest or file of the second",
    )


def test_a_video_whose_output_path_nests_under_another_videos_file_fails_before_writing(
    tmp_path, inbox, output, run_partition, reliability
):
    """processed_videos/nest.mp4.json is a file, so processed_videos/nest.mp4.json/b.mp4.json cannot be written."""
    publish(inbox, "nest-a.mp4", source="/videos/nest.mp4")
    publish(inbox, "nest-b.mp4", source="/videos/nest.mp4.json/b.mp4")
    result, problems = run_second(tmp_path, inbox, output, run_partition, "nest-a.mp4", "nest-b.mp4")
    case = Case("collision: output path under another video's file", key_case, SOURCE, key="nest-b.mp4")
    problems += single_run_problems(result, case, inbox, None)
    assert not problems, "\n".join(problems)
    reliability.record(
        "bad input",
        "collision: output path under another video's file",
        tried=1,
        handled=1,
        nothing_lost="first partition's files byte-identical; no manifest or file of the second",
    )


def test_a_source_video_is_claimed_by_its_first_partition_only(tmp_path):
    """The claim alone, without the writer's later defences: its own re-run passes, another partition is refused."""
    storage = LocalStorage(tmp_path)
    info = VideoInfo("/videos/same.mp4")
    claim_video(storage, "first.mp4", "first.mp4.parquet", info, "same.mp4")
    claim_video(storage, "first.mp4", "first.mp4.parquet", info, "same.mp4")  # a re-run of the owner
    with pytest.raises(ProcessedVideoError) as caught:
        claim_video(storage, "second.mp4", "second.mp4.parquet", info, "same.mp4")
    message = str(caught.value)
    assert message.startswith("second.mp4.parquet, field 'clip_assets.source_video': /videos/same.mp4"), message
    assert "already curated by partition 'first.mp4'" in message
    assert str(tmp_path / layout.video_claim_key("same.mp4")) in message
