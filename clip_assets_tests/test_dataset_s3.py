"""The clip index and vectors on an object store's output root (S3, Azure, GCS): real endpoints on loopback,
through real Dagster runs."""

from urllib.parse import unquote

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


def test_index_vectors_and_duplicates_on_a_store(store, inbox, instance):
    """S3, Azure and GCS: Lance reaches each root with the backend's own connection."""
    a = clips_with_vectors("/videos/a.mp4", 3, seed=11, filtered=[2])
    b = clips_with_vectors("/videos/b.mp4", 2, seed=12, twins={0: a[1].embeddings["cosmos-embed1"]})
    write_video(inbox / "a.mp4.parquet", a, source_video="/videos/a.mp4")
    write_video(inbox / "b.mp4.parquet", b, source_video="/videos/b.mp4")
    output = store.url("curated")
    runs = []
    for key in ("a.mp4", "b.mp4"):
        runs.append(materialize_partition(instance, key, str(inbox), output, s3=store.s3))
        runs.append(materialize_dataset_tables(instance, key, str(inbox), output, s3=store.s3))
        assert runs[-2].success and runs[-1].success
        assert all(check.passed for check in runs[-1].get_asset_check_evaluations())
    assert materialization_metadata(runs[-1], "clip_index")["dagster/uri"] == f"{output}/dataset/clip_index.lance"
    stored = store.keys("curated")
    assert any(key.startswith("dataset/clip_index.lance/") for key in stored)

    dataset = open_dataset(output, store.options)
    rows = dataset.clips([ci.CLIP_ID, ci.PASSED, ci.MP4_URI])
    assert rows.num_rows == 5 and rows.column(ci.PASSED).to_pylist().count(True) == 4
    assert all(uri.startswith(f"{output}/") for uri in rows.column(ci.MP4_URI).to_pylist())
    assert dataset.nearest(b[0].uuid, 1)[0][0] == a[1].uuid
    assert dataset.query("SELECT count(*) AS n FROM vectors").to_pylist() == [{"n": 4}]

    grouping = materialize_near_duplicates(instance, str(inbox), output, s3=store.s3)
    assert grouping.success and materialization_metadata(grouping, "near_duplicates")["groups"] == 1
    decisions = dataset.near_duplicates().to_pylist()  # NeMo's rule: a row per clip, one of the twins removed
    removed = [r for r in decisions if not r["kept"]]
    assert len(decisions) == 4 and len(removed) == 1
    assert sorted([removed[0]["clip_id"], removed[0]["max_id"]]) == sorted([a[1].uuid, b[0].uuid])
    assert "dataset/near_duplicates_centroids.npy" in store.keys("curated")

    transitive = materialize_near_duplicates(instance, str(inbox), output, s3=store.s3, rule="transitive")
    assert transitive.success and materialization_metadata(transitive, "near_duplicates")["groups"] == 1
    assert sorted(r["clip_id"] for r in dataset.near_duplicates().to_pylist()) == sorted([a[1].uuid, b[0].uuid])

    # The credentials reach Lance, and nothing else: not the location's repr, not any event of any run.
    location = table_location(store.storage("curated"), "dataset/clip_index.lance")
    assert location.storage_options
    if store.secret is not None:
        assert store.secret in location.storage_options.values() and store.secret not in repr(location)
        for run in [*runs, grouping, transitive]:
            for event in run.all_events:
                assert store.secret not in str(event)
    if store.name == "gcs":  # Lance commits a table version only if no other writer made it first
        commits = [r for r in store.requests(frozenset({"XmlPutObject"})) if "_versions" in unquote(r.path)]
        assert commits and all(r.headers.get("x-goog-if-generation-match") == "0" for r in commits)

    # A re-run over unchanged outputs takes no lock and writes nothing: index, vectors, checks, decisions.
    store.proxy.reset_counts()
    for key in ("a.mp4", "b.mp4"):
        assert materialize_dataset_tables(instance, key, str(inbox), output, s3=store.s3).success
    assert materialize_near_duplicates(instance, str(inbox), output, s3=store.s3, rule="transitive").success
    assert store.count(store.operations.reads) > 0  # the proxy saw the re-run
    changed = store.requests(store.operations.writes | store.operations.deletes)
    assert changed == [], [(r.operation, unquote(r.path)) for r in changed]


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
