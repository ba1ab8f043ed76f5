"""The clip index and vectors on an S3 output root: a real endpoint on loopback, through real Dagster runs."""

from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.read import open_dataset
from clip_assets.dataset.tables import table_location
from clip_assets.storage.s3 import S3Connection, open_s3
from clip_assets_tests.support.dataset import (
    materialization_metadata,
    materialize_dataset_tables,
    materialize_near_duplicates,
    materialize_partition,
)
from clip_assets_tests.support.factories import clips_with_vectors, write_video
from clip_assets_tests.support.s3_endpoint import SECRET_KEY


def test_index_vectors_and_duplicates_on_s3(s3, inbox, instance):
    a = clips_with_vectors("/videos/a.mp4", 3, seed=11, filtered=[2])
    b = clips_with_vectors("/videos/b.mp4", 2, seed=12, twins={0: a[1].embeddings["cosmos-embed1"]})
    write_video(inbox / "a.mp4.parquet", a, source_video="/videos/a.mp4")
    write_video(inbox / "b.mp4.parquet", b, source_video="/videos/b.mp4")
    output = s3.url("curated")
    runs = []
    for key in ("a.mp4", "b.mp4"):
        runs.append(materialize_partition(instance, key, str(inbox), output, s3=s3.connection))
        runs.append(materialize_dataset_tables(instance, key, str(inbox), output, s3=s3.connection))
        assert runs[-2].success and runs[-1].success
        assert all(check.passed for check in runs[-1].get_asset_check_evaluations())
    assert materialization_metadata(runs[-1], "clip_index")["dagster/uri"] == f"{output}/dataset/clip_index.lance"
    stored = s3.keys("curated")
    assert any(key.startswith("dataset/clip_index.lance/") for key in stored)

    dataset = open_dataset(output, s3.connection.storage_options())
    rows = dataset.clips([ci.CLIP_ID, ci.PASSED, ci.MP4_URI])
    assert rows.num_rows == 5 and rows.column(ci.PASSED).to_pylist().count(True) == 4
    assert all(uri.startswith(f"{output}/") for uri in rows.column(ci.MP4_URI).to_pylist())
    assert dataset.nearest(b[0].uuid, 1)[0][0] == a[1].uuid
    assert dataset.query("SELECT count(*) AS n FROM vectors").to_pylist() == [{"n": 4}]

    grouping = materialize_near_duplicates(instance, str(inbox), output, s3=s3.connection)
    assert grouping.success and materialization_metadata(grouping, "near_duplicates")["groups"] == 1
    assert sorted(r["clip_id"] for r in dataset.near_duplicates().to_pylist()) == sorted([a[1].uuid, b[0].uuid])

    # The credentials reach Lance, and nothing else: not the location's repr, not any event of any run.
    location = table_location(s3.storage("curated"), "dataset/clip_index.lance")
    assert location.storage_options and SECRET_KEY in location.storage_options.values()
    assert SECRET_KEY not in repr(location)
    for run in [*runs, grouping]:
        for event in run.all_events:
            assert SECRET_KEY not in str(event)


def test_lance_reaches_s3_the_way_the_client_does(monkeypatch):
    """AWS itself: no endpoint, virtual-hosted by region; a custom endpoint: that endpoint, path-style,
    plain HTTP allowed only for an http:// one; credentials from the client's own chain."""
    for variable in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    aws = open_s3("s3://bucket/prefix", S3Connection(region_name="eu-west-1")).object_store_options()
    assert aws == {
        "aws_region": "eu-west-1",
        "aws_virtual_hosted_style_request": "true",
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": SECRET_KEY,
    }
    minio = open_s3("s3://bucket", S3Connection(endpoint_url="https://minio.internal:9000")).object_store_options()
    assert (minio["aws_endpoint"], minio["allow_http"], minio["aws_virtual_hosted_style_request"]) == (
        "https://minio.internal:9000",
        "false",
        "false",
    )
