import json

from dagster import materialize

from clip_assets.defs.resources import WriterSettingsResource
from clip_assets_tests.support.dataset import FAMILY_ASSETS, build_resources, dataset_summary
from clip_assets_tests.support.factories import write_video


def test_rolls_up_every_partition(inbox, output, instance, run_partition):
    write_video(inbox / "a.mp4.parquet", source_video="/videos/a.mp4", num_clips=3, filtered=[0])
    write_video(inbox / "b.mp4.parquet", source_video="/videos/b.mp4", num_clips=2)
    assert run_partition("a.mp4").success and run_partition("b.mp4").success
    instance.add_dynamic_partitions("processed_videos", ["never-materialized.mp4"])

    result = summarize(inbox, output, instance)
    summary = json.loads((output / "_clip_assets/dataset_summary.json").read_text())
    assert summary["videos"] == 2
    assert (summary["clips_passed"], summary["clips_filtered"]) == (4, 1)
    assert summary["caption_coverage"] == 1.0 and summary["embedding_coverage"] == 1.0
    assert summary["clips_by_video"] == {"a.mp4": 2, "b.mp4": 2}
    on_disk = sum(p.stat().st_size for p in output.glob("clips/*.mp4")) + sum(
        p.stat().st_size for p in output.glob("filtered_clips/*.mp4")
    )
    assert summary["bytes_by_family"]["clip_files"] == on_disk
    assert abs(summary["clip_hours"] * 3600 - 5 * 8 / 24) < 1e-9
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["videos_without_outputs"].value == 1
    assert metadata["plot"].value.startswith("![dataset summary](data:image/png;base64,")


def summarize(inbox, output, instance):
    return materialize(
        [*FAMILY_ASSETS, dataset_summary],
        selection=[dataset_summary],
        instance=instance,
        resources=build_resources(str(inbox), str(output), WriterSettingsResource()),
    )


def test_one_partition_and_no_partition(inbox, output, instance, run_partition):
    assert summarize(inbox, output, instance).success
    assert json.loads((output / "_clip_assets/dataset_summary.json").read_text())["videos"] == 0
    write_video(inbox / "a.mp4.parquet", source_video="/videos/a.mp4", num_clips=2)
    assert run_partition("a.mp4").success
    assert summarize(inbox, output, instance).success
    summary = json.loads((output / "_clip_assets/dataset_summary.json").read_text())
    assert summary["videos"] == 1 and summary["clips_by_video"] == {"a.mp4": 2}
