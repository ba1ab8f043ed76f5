import io
import json
import tarfile

from PIL import Image

from clip_assets.dataset.shards import load_shards_index
from clip_assets.dataset.summary import HISTOGRAM_BINS, MAX_VIDEO_BARS, DatasetStats, plot_png, videos_chart
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.curated import curate, materialize_exports
from clip_assets_tests.support.dataset import materialize_summary
from clip_assets_tests.support.factories import write_video


def test_rolls_up_every_partition(inbox, output, instance, run_partition):
    write_video(inbox / "a.mp4.parquet", source_video="/videos/a.mp4", num_clips=3, filtered=[0])
    write_video(inbox / "b.mp4.parquet", source_video="/videos/b.mp4", num_clips=2)
    assert run_partition("a.mp4").success and run_partition("b.mp4").success
    instance.add_dynamic_partitions("processed_videos", ["never-materialized.mp4"])

    result = materialize_summary(instance, str(inbox), str(output))
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


def test_one_partition_and_no_partition(inbox, output, instance, run_partition):
    assert materialize_summary(instance, str(inbox), str(output)).success
    assert json.loads((output / "_clip_assets/dataset_summary.json").read_text())["videos"] == 0
    write_video(inbox / "a.mp4.parquet", source_video="/videos/a.mp4", num_clips=2)
    assert run_partition("a.mp4").success
    assert materialize_summary(instance, str(inbox), str(output)).success
    summary = json.loads((output / "_clip_assets/dataset_summary.json").read_text())
    assert summary["videos"] == 1 and summary["clips_by_video"] == {"a.mp4": 2}


def test_the_summary_counts_the_training_shards(inbox, output, instance):
    curate(instance, inbox, str(output), ["a.mp4", "b.mp4"])
    assert materialize_exports(instance, inbox, str(output), shard_bytes=1 << 20, page_size=3).success
    index = load_shards_index(LocalStorage(output))
    assert index is not None and index.samples == 5  # a: 2 passed, b: 3, no near-duplicates between them
    result = materialize_summary(instance, str(inbox), str(output))
    tables = json.loads((output / "_clip_assets/dataset_summary.json").read_text())["dataset_tables"]
    # What is on disk, counted here: the tars, their bytes, the samples in them (one MP4 each).
    tars = sorted((output / "training_shards").glob("*.tar"))
    samples = 0
    for tar in tars:
        with tarfile.open(tar) as archive:
            samples += sum(name.endswith(".mp4") for name in archive.getnames())
    expected = (len(tars), samples, sum(tar.stat().st_size for tar in tars))
    assert (tables["training_shards"], tables["training_shard_samples"], tables["training_shard_bytes"]) == expected
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["training_shard_samples"].value == 5 and metadata["training_shard_bytes"].value == expected[2]


def test_the_plot_stays_readable_at_thousands_of_videos():
    few = {f"v{n}.mp4": n % 9 + 1 for n in range(MAX_VIDEO_BARS)}
    kind, _, heights = videos_chart(few)
    assert kind == "per_video" and heights == sorted(few.values(), reverse=True)

    many = {f"v{n}.mp4": (n * 7919) % 500 + 1 for n in range(5000)}
    kind, edges, heights = videos_chart(many)
    assert kind == "histogram" and len(heights) <= HISTOGRAM_BINS and sum(heights) == 5000
    assert edges[0] == 1 and edges == sorted(edges)
    stats = DatasetStats(videos=5000, clips_passed=sum(many.values()), clips_by_video=many)
    stats.add_family("clip_files", 10, 5_000_000)
    image = Image.open(io.BytesIO(plot_png(stats)))
    assert image.size == (800, 288)  # 10 x 3.6 in at 80 dpi, whatever the number of videos
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or ()) > 10  # drawn, not blank
