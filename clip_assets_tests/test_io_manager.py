"""The families' IO manager: what is downstream of the families reads them through it, a user's own asset too."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, Definitions, materialize

from clip_assets.components.dataset import dataset_definitions, dataset_resources
from clip_assets.components.names import DatasetNames
from clip_assets.components.resources import WriterSettingsResource
from clip_assets.dataset.family_outputs import FamilyPartition
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.factories import make_clips, write_video

REPO = Path(__file__).resolve().parents[1]


def readme_asset() -> object:
    """The README's own-asset example, exactly as printed."""
    text = (REPO / "README.md").read_text()
    start = text.index("```python\nimport dagster as dg\n")
    block = text[start + len("```python\n") :]
    namespace: dict[str, object] = {}
    exec(block[: block.index("```")], namespace)  # the README's code, run as a user would paste it
    return namespace["long_clips"]


def test_a_users_own_asset_reads_a_family_without_knowing_the_layout(tmp_path, instance):
    names = DatasetNames()
    inbox, output = tmp_path / "inbox", tmp_path / "output"
    clips = make_clips(4, filtered=[1], source_video="/videos/a.mp4")
    clips[2].span_end = clips[2].span_start + 3.5  # one clip longer than 3 s
    write_video(inbox / "a.mp4.parquet", clips, source_video="/videos/a.mp4")
    resources = dataset_resources(names, str(inbox), str(output), WriterSettingsResource(input_path="/videos"))
    definitions = Definitions.merge(dataset_definitions(names, resources), Definitions(assets=[readme_asset()]))
    instance.add_dynamic_partitions(names.partitions, ["a.mp4"])
    tags = {"dagster/partition": "a.mp4"}
    assert definitions.resolve_job_def("curate_videos").execute_in_process(instance=instance, tags=tags).success

    assets = list(definitions.assets or ())
    selection = [AssetKey("long_clips")]
    result = materialize(assets, selection=selection, partition_key="a.mp4", instance=instance, resources=resources)
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["long_clips"].value == 1
    assert event.materialization.metadata["first"].value == [clips[2].uuid]


def test_the_view_names_what_was_written_and_reads_it_lazily(tmp_path, run_partition, inbox, output):
    clips = make_clips(3, filtered=[1])
    write_video(inbox / "cam1/v.mp4.parquet", clips)
    assert run_partition("cam1/v.mp4").success
    storage = LocalStorage(output)
    files = FamilyPartition("clip_files", "cam1/v.mp4", storage)
    assert files.keys == sorted(
        [f"clips/{clips[0].uuid}.mp4", f"clips/{clips[2].uuid}.mp4", f"filtered_clips/{clips[1].uuid}.mp4"]
    )
    assert files.urls == [str(output / key) for key in files.keys]
    assert files.read(f"clips/{clips[0].uuid}.mp4") == clips[0].mp4
    metadata = dict(FamilyPartition("clip_metadata", "cam1/v.mp4", storage).documents())
    assert {document["span_uuid"] for document in metadata.values()} == {clip.uuid for clip in clips}
    (embedding_file,) = FamilyPartition("clip_embeddings", "cam1/v.mp4", storage).vectors()
    key, vectors, model = embedding_file
    assert key.endswith(".parquet") and key in FamilyPartition("clip_embeddings", "cam1/v.mp4", storage).keys
    assert model.name == "cosmos-embed1" and set(vectors) == {clips[0].uuid, clips[2].uuid}
    never = FamilyPartition("clip_files", "never.mp4", storage)
    assert not never.written and never.keys == [] and never.urls == []
