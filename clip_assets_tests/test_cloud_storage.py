"""The Azure and GCS backends against their emulators (Azurite, fake-gcs-server) behind the fault proxy:
what the S3 suite checks of the S3 backend (test_s3_storage.py, test_s3_requests.py), on each.

Where an emulator lets through what the cloud refuses, the test looks at the request itself (the
checksum or condition it carries), as test_s3_requests.py does for moto; docs/cloud-storage.md lists
each difference.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time

import google_crc32c
import pytest

from clip_assets.contract import ProcessedVideoReader
from clip_assets.contract import schema as contract_schema
from clip_assets.engine.inspection import inspect_video
from clip_assets.storage import Storage, StorageError, open_storage
from clip_assets.storage.azure import API_VERSION, parse_azure_url
from clip_assets.storage.gcs import parse_gcs_url
from clip_assets.storage.lease import ExpiringLease
from clip_assets_tests.support.azurite import ACCOUNT_KEY
from clip_assets_tests.support.factories import make_clips, write_video
from clip_assets_tests.support.stores import MiB, StoreEndpoint

LOCK = "_clip_assets/locks/f/p.lock"
# What each store calls the single-request upload and the requests of a large one.
SINGLE_PUT = {"azure": "PutBlob", "gcs": "InsertObject"}
LARGE_PARTS = {"azure": "PutBlock", "gcs": "UploadChunk"}
LARGE_COMMIT = {"azure": "PutBlockList", "gcs": "StartResumableUpload"}
# A size above each store's threshold for a large upload in these tests (Azure 6 MiB, GCS 8 MiB).
LARGE = 9 * MiB


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def test_parse_urls():
    assert parse_azure_url("az://container") == ("container", "")
    assert parse_azure_url("abfs://container/a/b/") == ("container", "a/b/")
    assert parse_gcs_url("gs://bucket/a/b") == ("bucket", "a/b/")
    with pytest.raises(ValueError, match="unsafe"):
        parse_azure_url("az://container/a/../b")
    with pytest.raises(ValueError, match="no bucket"):
        parse_gcs_url("gs:///x")
    with pytest.raises(ValueError, match="container only"):
        parse_azure_url("abfs://container@account.dfs.core.windows.net/x")


def test_put_read_stat_list_delete_under_a_prefix(cloud: StoreEndpoint):
    storage = cloud.storage("curated/v1")
    assert storage.root == f"{cloud.scheme}://{cloud.container}/curated/v1"
    info = storage.put("metas/v0/a b é.json", b'{"x": 1}')
    assert info.sha256 == sha256(b'{"x": 1}')
    assert storage.read("metas/v0/a b é.json") == b'{"x": 1}'
    stat = storage.stat("metas/v0/a b é.json")
    assert (stat.size, stat.sha256, stat.fingerprint) == (8, sha256(b'{"x": 1}'), info.fingerprint)
    assert [i.key for i in storage.list("metas/")] == ["metas/v0/a b é.json"]
    assert cloud.keys() == ["curated/v1/metas/v0/a b é.json"]  # nothing outside the prefix
    storage.delete("metas/v0/a b é.json")
    storage.delete("metas/v0/a b é.json")
    assert storage.stat("metas/v0/a b é.json") is None
    with pytest.raises(StorageError, match="no such object") as caught:
        storage.read("metas/v0/a b é.json")
    assert caught.value.errno == 2


def test_abfs_urls_reach_the_same_container_as_az(azure: StoreEndpoint):
    open_storage(f"abfs://{azure.container}/x").put("k", b"v")
    assert azure.storage("x").read("k") == b"v"
    assert open_storage(f"abfss://{azure.container}/x").root == f"az://{azure.container}/x"


def test_every_upload_carries_a_checksum_the_service_verifies(cloud: StoreEndpoint):
    storage = cloud.storage("out")
    data = os.urandom(3000)
    storage.put("clips/x.mp4", data)
    (put,) = cloud.requests(frozenset({SINGLE_PUT[cloud.name]}))
    if cloud.name == "azure":
        assert put.headers["content-md5"] == b64(bytes.fromhex(put.body_md5))  # of what arrived
        assert put.headers["x-ms-meta-sha256"] == sha256(data)
        assert put.headers["x-ms-blob-content-type"] == "video/mp4"
    else:  # the object resource in the multipart body carries the crc32c the service checks
        resource = json.loads(put.body_start.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
        assert resource["crc32c"] == b64(google_crc32c.value(data).to_bytes(4, "big"))
        assert resource["metadata"] == {"sha256": sha256(data)}
        assert b"content-type: video/mp4" in put.body_start.lower()  # the media part's type
    assert storage.stat("clips/x.mp4").sha256 == sha256(data)


@pytest.mark.parametrize("large", [False, True], ids=["single", "large"])
def test_a_body_corrupted_in_transit_is_refused_and_nothing_is_stored(cloud: StoreEndpoint, large, reliability):
    """Azurite verifies each request's Content-MD5 as Azure does. fake-gcs-server 1.54 ignores the crc32c
    the request carries (GCS refuses the body: 400); the backend's comparison of the stored object's
    crc32c with the one it sent then fails the write and removes the object, so nothing stays on either."""
    storage = cloud.storage("out")
    data = os.urandom(LARGE if large else 3000)
    operation = LARGE_PARTS[cloud.name] if large else SINGLE_PUT[cloud.name]
    cloud.proxy.inject(operation, count=1, corrupt=True, corrupt_at=-200)  # inside the data, not a boundary
    with pytest.raises(StorageError, match=rf"cannot write {cloud.scheme}://.*/out/clips/a\.mp4: ") as caught:
        storage.put("clips/a.mp4", data)
    assert cloud.proxy.injected == {f"{operation}:corrupt": 1}
    if cloud.name == "azure":
        assert "Md5Mismatch" in str(caught.value)
    assert storage.stat("clips/a.mp4") is None
    storage.put("clips/a.mp4", data)  # the same bytes, undamaged, are accepted
    assert storage.read("clips/a.mp4") == data
    reliability.record(
        "fault",
        f"{cloud.label}: a request body corrupted in transit ({'large' if large else 'single'} upload)",
        tried=1,
        handled=1,
        nothing_lost="the write failed naming the object, nothing stored; the same bytes then accepted",
    )


def test_large_objects_are_committed_once(cloud: StoreEndpoint):
    storage = cloud.storage("out")
    data = os.urandom(LARGE)
    storage.put("clips/big.mp4", data)
    assert cloud.proxy.counts[SINGLE_PUT[cloud.name]] == 0
    assert cloud.proxy.counts[LARGE_COMMIT[cloud.name]] == 1
    parts = cloud.requests(frozenset({LARGE_PARTS[cloud.name]}))
    assert len(parts) == 5 if cloud.name == "azure" else len(parts) == 9  # 2 MiB blocks; 1 MiB chunks
    if cloud.name == "azure":
        for part in parts:
            assert part.headers["content-md5"] == b64(bytes.fromhex(part.body_md5))
        (commit,) = cloud.requests(frozenset({"PutBlockList"}))
        assert commit.headers["x-ms-blob-content-md5"] == b64(hashlib.md5(data).digest())
    else:
        (start,) = cloud.requests(frozenset({"StartResumableUpload"}))
        resource = json.loads(start.body_start)
        assert resource["crc32c"] == b64(google_crc32c.value(data).to_bytes(4, "big"))
    assert storage.read("clips/big.mp4") == data
    assert storage.stat("clips/big.mp4").sha256 == sha256(data)


def test_a_large_upload_failing_beyond_the_retries_leaves_nothing_visible(cloud: StoreEndpoint, reliability):
    storage = cloud.storage("out", azure_max_attempts=2, gcs_retry_deadline_s=2)
    cloud.proxy.inject(LARGE_PARTS[cloud.name], count=10_000, status=500, code="InternalError")
    with pytest.raises(StorageError, match=rf"cannot write {cloud.scheme}://.*/out/clips/big\.mp4"):
        storage.put("clips/big.mp4", os.urandom(LARGE))
    assert storage.stat("clips/big.mp4") is None and cloud.keys() == []
    assert storage.remove_abandoned(older_than_s=0) == 0  # what is left is never visible, and expires
    reliability.record(
        "fault",
        f"{cloud.label}: a block or chunk of a large upload failing beyond the retry bound",
        tried=1,
        handled=1,
        nothing_lost="no object at the key, nothing listed",
    )


def test_throttling_and_server_errors_are_retried_within_bounds(cloud: StoreEndpoint):
    storage = cloud.storage("out", azure_max_attempts=4, gcs_retry_deadline_s=30)
    operation = SINGLE_PUT[cloud.name]
    cloud.proxy.inject(operation, count=2, status=503, code="ServerBusy")
    cloud.proxy.inject(operation, count=1, status=500, code="InternalError")
    storage.put("a.bin", b"payload")
    assert cloud.proxy.injected == {f"{operation}:503": 2, f"{operation}:500": 1}
    assert storage.read("a.bin") == b"payload"

    cloud.proxy.reset_counts()
    impatient = cloud.storage("out", azure_max_attempts=3, gcs_retry_deadline_s=2)
    cloud.proxy.inject(operation, count=10_000, status=503, code="ServerBusy")
    started = time.monotonic()
    with pytest.raises(StorageError, match=rf"cannot write {cloud.scheme}://.*/out/b\.bin: .*(503|ServerBusy)"):
        impatient.put("b.bin", b"payload")
    assert time.monotonic() - started < 30
    if cloud.name == "azure":
        assert cloud.proxy.injected[f"{operation}:503"] == 3  # azure_max_attempts, then a clear failure
    assert storage.stat("b.bin") is None


@pytest.mark.timeout(120)
def test_a_conditional_write_failing_beyond_the_retries_is_an_error_not_a_refusal(cloud: StoreEndpoint):
    """503 on every attempt says nothing about whether the key exists: the write fails naming the object."""
    storage = cloud.storage("out", azure_max_attempts=3, gcs_retry_deadline_s=2)
    operation = SINGLE_PUT[cloud.name]
    cloud.proxy.inject(operation, count=10_000, status=503, code="ServerBusy")
    with pytest.raises(StorageError, match=rf"cannot write {cloud.scheme}://.*/out/a\.bin"):
        storage.put_if_absent("a.bin", b"payload")
    cloud.proxy.reset_counts()
    storage.put("b.bin", b"old")
    etag = storage.stat("b.bin").etag
    cloud.proxy.inject(operation, count=10_000, status=503, code="ServerBusy")
    with pytest.raises(StorageError, match=rf"cannot write {cloud.scheme}://.*/out/b\.bin"):
        storage.put_if_match("b.bin", b"new", etag)
    cloud.proxy.reset_counts()
    assert storage.read("b.bin") == b"old" and storage.stat("a.bin") is None


def test_connection_resets_while_reading_are_retried(cloud: StoreEndpoint):
    storage = cloud.storage("out")
    storage.put("a.bin", b"x" * 10_000)
    read = "GetBlob" if cloud.name == "azure" else "GetObjectMedia"
    cloud.proxy.inject(read, count=2, reset=True)
    assert storage.read("a.bin") == b"x" * 10_000
    assert cloud.proxy.injected[f"{read}:reset"] == 2


def test_conditional_writes_never_replace_what_they_did_not_see(cloud: StoreEndpoint):
    storage = cloud.storage("out")
    first = storage.put_if_absent("a.bin", b"first")
    assert first is not None and storage.put_if_absent("a.bin", b"second") is None
    assert storage.read("a.bin") == b"first"
    replaced = storage.put_if_match("a.bin", b"third", first.etag)
    assert replaced is not None and storage.read_with_etag("a.bin") == (b"third", replaced.etag)
    assert storage.put_if_match("a.bin", b"stale", first.etag) is None  # that version is gone
    assert storage.put_if_match("gone.bin", b"x", first.etag) is None
    assert storage.read("a.bin") == b"third" and storage.stat("gone.bin") is None

    big = os.urandom(LARGE)
    assert storage.put_if_absent("big.bin", big) is not None
    if cloud.name == "azure":
        (commit,) = cloud.requests(frozenset({"PutBlockList"}))
        assert commit.headers["if-none-match"] == "*"  # the commit decides
    else:
        (start,) = cloud.requests(frozenset({"StartResumableUpload"}))
        assert "ifGenerationMatch=0" in start.query.split("&")
    cloud.proxy.reset_counts()
    assert storage.put_if_absent("big.bin", os.urandom(LARGE)) is None
    assert cloud.proxy.counts[LARGE_PARTS[cloud.name]] == 0  # asked first, uploaded nothing
    assert storage.read("big.bin") == big


def _race(storage: Storage, key: str, payloads: list[bytes]) -> list[object]:
    start = threading.Barrier(len(payloads))
    answers: list[object] = [None] * len(payloads)

    def write(index: int) -> None:
        start.wait()
        answers[index] = storage.put_if_absent(key, payloads[index])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_of_two_large_writers_racing_for_one_key_exactly_one_wins(azure: StoreEndpoint, reliability):
    """Both pass the first look (the key is new to both); the condition on Put Block List lets only one
    create it, with its own blocks only (block ids are unique to each upload).

    On GCS the resumable upload carries `ifGenerationMatch=0` from its first request (checked in
    `test_conditional_writes_never_replace_what_they_did_not_see`) and GCS enforces it as the object is
    created; fake-gcs-server 1.54 checks it only when the session starts, so two racing sessions both
    finish there (fixed upstream after 1.54: docs/cloud-storage.md)."""
    cloud = azure
    storage = cloud.storage("out")
    rounds = 3
    for round_number in range(rounds):
        key = f"clips/race-{round_number}.mp4"
        payloads = [os.urandom(LARGE), os.urandom(LARGE)]
        answers = _race(storage, key, payloads)
        winners = [i for i, answer in enumerate(answers) if answer is not None]
        assert len(winners) == 1, f"round {round_number}: {len(winners)} writers created {key}"
        assert storage.read(key) == payloads[winners[0]]
    reliability.record(
        "fault",
        f"{cloud.label}: two writers creating one large key at once (condition on the commit)",
        tried=rounds,
        handled=rounds,
        nothing_lost="exactly one created it, with its bytes",
    )


def test_listing_follows_pagination(cloud: StoreEndpoint):
    storage = cloud.storage("in", azure_list_page_size=3, gcs_list_page_size=3)
    for i in range(8):
        storage.put(f"cam/{i}.parquet", b"x")
    cloud.proxy.reset_counts()
    assert sorted(i.key for i in storage.list()) == [f"cam/{i}.parquet" for i in range(8)]
    assert cloud.count(cloud.operations.lists) == 3


def test_parquet_streams_with_ranged_reads_and_projection(cloud: StoreEndpoint, tmp_path):
    clips = make_clips(24)
    for clip in clips:  # make the MP4 column the bulk of the file, as in real data
        clip.mp4 += os.urandom(MiB // 4)
    data = write_video(tmp_path / "v.parquet", clips).read_bytes()
    storage = cloud.storage("inbox")
    storage.put("v.parquet", data)
    cloud.proxy.reset_counts()
    with storage.open("v.parquet") as handle, ProcessedVideoReader(handle, storage.root + "/v.parquet") as reader:
        spans = [clip.span_start for clip in reader.iter_clips([contract_schema.SPAN_START])]
    assert len(spans) == 24
    reads = cloud.requests(cloud.operations.reads)
    served = sum(r.bytes_returned for r in reads)
    assert reads and all("range" in r.headers or "x-ms-range" in r.headers for r in reads)
    assert served < len(data) / 10, (served, len(data))  # the MP4 and WebP columns were never fetched
    if cloud.name == "azure":  # each range's MD5, computed by the service and checked by the client
        assert all(r.headers.get("x-ms-range-get-content-md5") == "true" for r in reads)
    with storage.open("v.parquet") as handle, ProcessedVideoReader(handle, storage.root + "/v.parquet") as reader:
        assert inspect_video(reader).num_clips == 24


def test_a_file_replaced_while_being_read_fails_instead_of_mixing_versions(cloud: StoreEndpoint):
    storage = cloud.storage("inbox")
    storage.put("v.bin", os.urandom(300_000))
    with storage.open("v.bin") as handle:
        handle.read(10)
        storage.put("v.bin", os.urandom(300_000))
        handle.seek(200_000)
        with pytest.raises(StorageError, match="changed while being read"):
            handle.read(10)


def test_errors_name_the_object_and_never_the_secret(cloud: StoreEndpoint):
    storage = open_storage(f"{cloud.scheme}://no-such-{cloud.container}/x")
    with pytest.raises(StorageError) as caught:
        storage.put("a.bin", b"1")
    message = str(caught.value)
    assert f"{cloud.scheme}://no-such-{cloud.container}/x/a.bin" in message and "\n" not in message
    assert ("ContainerNotFound" if cloud.name == "azure" else "404") in message
    assert ACCOUNT_KEY not in message


def test_the_gallery_s_files_carry_their_content_types(cloud: StoreEndpoint):
    storage = cloud.storage("out")
    storage.put("gallery/index.html", b"<!doctype html>")
    storage.put("previews/a/0_4.webp", b"RIFF")
    storage.put("big.mp4", os.urandom(LARGE))
    if cloud.name == "azure":
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(
            cloud.env["AZURE_STORAGE_CONNECTION_STRING"], api_version=API_VERSION
        )

        def stored_type(key: str) -> str:
            blob = client.get_blob_client(cloud.container, f"out/{key}")
            return str(blob.get_blob_properties().content_settings.content_type)
    else:
        from google.cloud import storage as gcs

        def stored_type(key: str) -> str:
            return str(gcs.Client().bucket(cloud.container).get_blob(f"out/{key}").content_type)

    assert stored_type("gallery/index.html") == "text/html; charset=utf-8"
    assert stored_type("previews/a/0_4.webp") == "image/webp"
    assert stored_type("big.mp4") == "video/mp4"


def test_a_lease_excludes_other_writers_and_names_its_holder(cloud: StoreEndpoint):
    storage = cloud.storage("out")
    with storage.lock(LOCK, timeout_s=5) as lease:
        lease.check()
        held = r"locks/f/p\.lock: held by .* for longer than 1 s"
        with pytest.raises(StorageError, match=held), storage.lock(LOCK, timeout_s=1):
            pass
    assert storage.stat(LOCK) is None  # released
    with storage.lock(LOCK, timeout_s=1):
        pass


def test_an_expired_lease_is_taken_over(cloud: StoreEndpoint):
    storage = cloud.storage("out")
    dead = json.dumps({"holder": "killed-host:123:abc", "expires_at": time.time() - 3600}).encode()
    storage.put(LOCK, dead)
    cloud.proxy.reset_counts()
    with storage.lock(LOCK, timeout_s=5):
        # Taken over at the first look: a refused create, one read, one conditional replace.
        assert (cloud.count(cloud.operations.writes), cloud.count(cloud.operations.reads)) == (2, 1)
        assert b"killed-host" not in storage.read(LOCK)


def test_a_lease_is_renewed_while_held_and_reports_when_lost(cloud: StoreEndpoint):
    storage = cloud.storage("out")
    lease = ExpiringLease(storage, LOCK, ttl_s=2, renew_every_s=0.2)
    lease.acquire(timeout_s=1)
    first = json.loads(storage.read(LOCK))["expires_at"]
    time.sleep(0.7)
    assert json.loads(storage.read(LOCK))["expires_at"] > first
    lease.check()
    storage.put(LOCK, b'{"holder": "usurper", "expires_at": 0}')  # someone took it
    time.sleep(0.7)
    with pytest.raises(StorageError, match="lease lost, taken over by another writer"):
        lease.check()
    lease.release()
    assert b"usurper" in storage.read(LOCK)  # a lost lease deletes nothing


def test_a_released_lease_is_a_conditional_delete(cloud: StoreEndpoint):
    """Azurite honours `If-Match` on Delete Blob; fake-gcs-server deletes whatever generation is named
    (GCS refuses with 412), so the request itself is checked."""
    storage = cloud.storage("out")
    with storage.lock(LOCK, timeout_s=5):
        etag = storage.stat(LOCK).etag
    (delete,) = cloud.requests(cloud.operations.deletes)
    if cloud.name == "azure":
        assert delete.headers["if-match"] == f'"{etag}"'
    else:
        assert f"ifGenerationMatch={etag}" in delete.query.split("&")
    assert storage.stat(LOCK) is None

    storage.put(LOCK, b"a")
    old = storage.stat(LOCK).etag
    storage.put(LOCK, b"b")
    storage.delete_if_match(LOCK, old)
    if cloud.name == "azure":
        assert storage.read(LOCK) == b"b"  # a newer version is left alone


def test_what_a_killed_writer_leaves_is_never_visible(cloud: StoreEndpoint):
    """Staged blocks (Azure) or an unfinished resumable session (GCS): not listed, not readable, and the
    service drops them itself, so remove_abandoned has nothing to do."""
    storage = cloud.storage("out")
    if cloud.name == "azure":
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(
            cloud.env["AZURE_STORAGE_CONNECTION_STRING"], api_version=API_VERSION
        )
        blob = client.get_blob_client(cloud.container, "out/clips/killed.mp4")
        blob.stage_block(base64.b64encode(b"killed-00000").decode(), b"x" * 1000)
    else:
        from google.cloud import storage as gcs

        blob = gcs.Client().bucket(cloud.container).blob("out/clips/killed.mp4", chunk_size=256 * 1024)
        session = blob.create_resumable_upload_session(size=MiB)
        assert session
    assert storage.stat("clips/killed.mp4") is None and list(storage.list()) == []
    assert storage.remove_abandoned(older_than_s=0) == 0
    storage.put("clips/killed.mp4", b"whole")  # the key is free for a complete object
    assert storage.read("clips/killed.mp4") == b"whole"


def test_lance_options_reach_the_same_store(cloud: StoreEndpoint):
    """What Lance is given names the emulator behind the proxy, and credentials (Azurite's key; for a
    GCS emulator, none: a placeholder token keeps object_store from asking a metadata server)."""
    options = cloud.storage("t").object_store_options()
    if cloud.name == "azure":
        assert options["azure_storage_endpoint"] == f"{cloud.proxy.url}/devstoreaccount1"
        assert options["azure_storage_account_key"] == ACCOUNT_KEY and options["allow_http"] == "true"
    else:
        assert options["google_base_url"] == cloud.proxy.url and options["google_skip_signature"] == "true"


def test_lance_reaches_azure_the_way_the_client_does(monkeypatch):
    """Azure itself: the account by name, no endpoint; a SAS connection string: the SAS, never as part of
    the endpoint. Building a client sends no request."""
    key_string = (
        f"DefaultEndpointsProtocol=https;AccountName=curation;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
    )
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", key_string)
    assert open_storage("az://container/prefix").object_store_options() == {
        "azure_storage_account_name": "curation",
        "azure_storage_account_key": ACCOUNT_KEY,
    }
    sas = "sv=2025-11-05&ss=b&srt=co&sp=rwdl&sig=c2lnbmF0dXJl"
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"BlobEndpoint=https://curation.blob.core.windows.net;SharedAccessSignature={sas}",
    )
    options = open_storage("az://container/prefix").object_store_options()
    assert options == {"azure_storage_account_name": "curation", "azure_storage_sas_key": sas}


def test_an_emulator_host_without_a_scheme_is_reached_over_http(gcs: StoreEndpoint, monkeypatch):
    """`STORAGE_EMULATOR_HOST=127.0.0.1:4443`, as emulators' own docs spell it: the client library alone
    would send its uploads to a URL without a scheme."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.proxy.url.removeprefix("http://"))
    storage = open_storage(gcs.url("plain"))
    storage.put("a.bin", b"payload")
    storage.put("big.bin", bytes(LARGE))
    assert storage.read("a.bin") == b"payload" and storage.stat("big.bin").size == LARGE
    assert storage.object_store_options()["google_base_url"] == gcs.proxy.url
