"""The S3 backend against a real S3 endpoint process (moto's server) behind a fault-injecting proxy."""

import base64
import dataclasses
import hashlib
import json
import os
import time

import pytest

from clip_assets import layout
from clip_assets.contract import ProcessedVideoReader
from clip_assets.contract import schema as contract_schema
from clip_assets.engine.inspection import inspect_video
from clip_assets.engine.writer import ArtifactWriter
from clip_assets.families import Artifact
from clip_assets.storage import StorageError
from clip_assets.storage.lease import ExpiringLease
from clip_assets.storage.s3 import S3Options, S3Storage, parse_s3_url
from clip_assets_tests.support.factories import make_clips, write_video
from clip_assets_tests.support.s3_endpoint import SECRET_KEY

MiB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_parse_s3_url():
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    with pytest.raises(ValueError, match="unsafe"):
        parse_s3_url("s3://bucket/a/../b")
    with pytest.raises(ValueError, match="no bucket"):
        parse_s3_url("s3:///x")


def test_put_read_stat_list_delete_under_a_prefix(s3):
    storage = s3.storage("curated/v1")
    assert storage.root == f"s3://{s3.bucket}/curated/v1"
    info = storage.put("metas/v0/a b é.json", b'{"x": 1}')
    assert info.sha256 == sha256(b'{"x": 1}')
    assert storage.read("metas/v0/a b é.json") == b'{"x": 1}'
    stat = storage.stat("metas/v0/a b é.json")
    assert (stat.size, stat.sha256, stat.fingerprint) == (8, sha256(b'{"x": 1}'), info.fingerprint)
    assert [i.key for i in storage.list("metas/")] == ["metas/v0/a b é.json"]
    assert s3.keys() == ["curated/v1/metas/v0/a b é.json"]  # nothing outside the prefix
    storage.delete("metas/v0/a b é.json")
    storage.delete("metas/v0/a b é.json")
    assert storage.stat("metas/v0/a b é.json") is None


def test_every_upload_carries_its_sha256_for_the_server_to_verify(s3):
    storage = s3.storage("out")
    data = os.urandom(3000)
    storage.put("clips/x.mp4", data)
    (put,) = [r for r in s3.proxy.requests if r.operation == "PutObject"]
    assert put.body_sha256 == sha256(data)  # what arrived is what was hashed
    assert put.headers["x-amz-checksum-sha256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert put.headers["x-amz-meta-sha256"] == sha256(data)
    head = s3.client.head_object(Bucket=s3.bucket, Key="out/clips/x.mp4", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == put.headers["x-amz-checksum-sha256"]


def test_md5_mode_sends_content_md5_instead(s3):
    storage = S3Storage(s3.client, s3.url("out"), S3Options(checksum="md5"))
    storage.put("a.bin", b"abc")
    (put,) = [r for r in s3.proxy.requests if r.operation == "PutObject"]
    assert put.headers["content-md5"] == base64.b64encode(hashlib.md5(b"abc").digest()).decode()


def test_large_objects_go_multipart_with_a_checksum_per_part(s3):
    storage = s3.storage("out")
    data = os.urandom(13 * MiB)  # threshold 6 MiB, parts of 5 MiB: 3 parts
    storage.put("clips/big.mp4", data)
    assert s3.proxy.counts["CreateMultipartUpload"] == 1 and s3.proxy.counts["CompleteMultipartUpload"] == 1
    parts = [r for r in s3.proxy.requests if r.operation == "UploadPart"]
    assert len(parts) == 3
    for part in parts:
        assert part.headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(part.body_sha256)).decode()
    assert s3.proxy.counts["PutObject"] == 0
    assert storage.read("clips/big.mp4") == data
    assert storage.stat("clips/big.mp4").sha256 == sha256(data)
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []


def test_a_failed_multipart_upload_is_aborted_and_never_visible(s3, reliability):
    storage = s3.storage("out")
    s3.proxy.inject("UploadPart", count=50, status=500, code="InternalError")
    with pytest.raises(StorageError, match=r"out/clips/big\.mp4.*InternalError"):
        storage.put("clips/big.mp4", os.urandom(11 * MiB))
    assert storage.stat("clips/big.mp4") is None
    assert s3.proxy.counts["AbortMultipartUpload"] == 1
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []
    reliability.record(
        "fault",
        "S3 multipart part failing beyond the retry bound",
        tried=1,
        handled=1,
        nothing_lost="no object at the key, the upload aborted",
    )


def test_throttling_and_server_errors_are_retried_within_bounds(s3, reliability):
    storage = s3.storage("out")
    s3.proxy.inject("PutObject", count=2, status=503, code="SlowDown")
    s3.proxy.inject("PutObject", count=1, status=500, code="InternalError")
    storage.put("a.bin", b"payload")
    assert s3.proxy.injected == {"PutObject:503": 2, "PutObject:500": 1}
    assert storage.read("a.bin") == b"payload"

    s3.proxy.reset_counts()
    s3.proxy.inject("PutObject", count=100, status=503, code="SlowDown")
    with pytest.raises(StorageError, match=r"cannot write s3://.*/out/b\.bin: SlowDown"):
        storage.put("b.bin", b"payload")
    assert s3.proxy.injected["PutObject:503"] == 5  # max_attempts, then a clear failure
    assert storage.stat("b.bin") is None
    reliability.record(
        "fault",
        "S3 throttling and 5xx on one request, then beyond the retry bound",
        tried=2,
        handled=2,
        nothing_lost="retried write stored exactly; the exhausted one failed naming the object, nothing stored",
    )


# Four retries back off for at most 1 + 2 + 4 + 8 s; reading such a failure as "already exists" instead
# waits on a lease nobody holds until the lock times out (an hour), which this timeout turns into a failure.
@pytest.mark.timeout(120)
def test_a_conditional_write_failing_beyond_the_retries_is_an_error_not_a_refusal(s3):
    """503 on every attempt says nothing about whether the key exists: the write fails naming the object."""
    storage = s3.storage("out")
    s3.proxy.inject("PutObject", count=5, status=503, code="SlowDown")
    with pytest.raises(StorageError, match=r"cannot write s3://.*/out/a\.bin: SlowDown"):
        storage.put_if_absent("a.bin", b"payload")
    assert s3.proxy.injected["PutObject:503"] == 5 and storage.stat("a.bin") is None

    storage.put("b.bin", b"old")
    etag = storage.stat("b.bin").etag
    s3.proxy.inject("PutObject", count=5, status=503, code="SlowDown")
    with pytest.raises(StorageError, match=r"cannot write s3://.*/out/b\.bin: SlowDown"):
        storage.put_if_match("b.bin", b"new", etag)
    assert storage.read("b.bin") == b"old"

    s3.proxy.reset_counts()
    s3.proxy.inject("PutObject", count=10_000, status=503, code="SlowDown")
    with pytest.raises(StorageError, match=r"cannot write s3://.*/out/_clip_assets/locks/.*: SlowDown"):
        ArtifactWriter(storage).write("clip_files", "p", "s", [Artifact("clips/a.mp4", b"A")])
    assert s3.proxy.injected["PutObject:503"] == 5  # one lease request, retried within bounds, then given up
    assert storage.stat("clips/a.mp4") is None and storage.stat(layout.lock_key("p")) is None


def test_connection_resets_while_reading_are_retried(s3):
    storage = s3.storage("out")
    storage.put("a.bin", b"x" * 10_000)
    s3.proxy.inject("GetObject", count=2, reset=True)
    assert storage.read("a.bin") == b"x" * 10_000
    assert s3.proxy.injected["GetObject:reset"] == 2


def test_put_if_absent_never_replaces(s3):
    storage = s3.storage("out")
    assert storage.put_if_absent("a.bin", b"first") is not None
    assert storage.put_if_absent("a.bin", b"second") is None
    assert storage.read("a.bin") == b"first"
    big = os.urandom(7 * MiB)
    assert storage.put_if_absent("big.bin", big) is not None
    s3.proxy.reset_counts()
    assert storage.put_if_absent("big.bin", os.urandom(7 * MiB)) is None
    assert s3.proxy.counts["CreateMultipartUpload"] == 0  # asked with a HEAD, uploaded nothing
    assert storage.read("big.bin") == big


def test_server_side_encryption_is_requested(s3):
    sse_s3 = S3Storage(s3.client, s3.url("out"), S3Options(server_side_encryption="AES256"))
    sse_s3.put("a.bin", b"1")
    assert s3.client.head_object(Bucket=s3.bucket, Key="out/a.bin")["ServerSideEncryption"] == "AES256"
    kms = S3Storage(s3.client, s3.url("out"), S3Options(server_side_encryption="aws:kms", sse_kms_key_id="key-1"))
    kms.put("b.bin", os.urandom(7 * MiB))  # multipart uploads carry it too
    head = s3.client.head_object(Bucket=s3.bucket, Key="out/b.bin")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "key-1")
    with pytest.raises(ValueError, match="aws:kms"):
        S3Options(sse_kms_key_id="key-1")


def test_listing_follows_pagination(s3):
    storage = S3Storage(s3.client, s3.url("in"), S3Options(list_page_size=3))
    for i in range(8):
        storage.put(f"cam/{i}.parquet", b"x")
    assert sorted(i.key for i in storage.list()) == [f"cam/{i}.parquet" for i in range(8)]
    assert s3.proxy.counts["ListObjects"] == 3


def test_abandoned_uploads_are_aborted(s3):
    storage = s3.storage("out")
    s3.client.create_multipart_upload(Bucket=s3.bucket, Key="out/clips/killed.mp4")
    s3.client.create_multipart_upload(Bucket=s3.bucket, Key="elsewhere/x")
    assert storage.remove_abandoned(older_than_s=3600) == 1  # moto dates every upload in 2010
    (left,) = s3.client.list_multipart_uploads(Bucket=s3.bucket)["Uploads"]
    assert left["Key"] == "elsewhere/x"  # outside the root: not ours to touch


def test_parquet_streams_with_ranged_reads_and_projection(s3, tmp_path):
    clips = make_clips(24)
    for clip in clips:  # make the MP4 column the bulk of the file, as in real data
        clip.mp4 += os.urandom(MiB)
    local = write_video(tmp_path / "v.parquet", clips)
    data = local.read_bytes()
    storage = s3.storage("inbox")
    storage.put("v.parquet", data)
    s3.proxy.reset_counts()
    with storage.open("v.parquet") as handle, ProcessedVideoReader(handle, "s3://inbox/v.parquet") as reader:
        spans = [clip.span_start for clip in reader.iter_clips([contract_schema.SPAN_START])]
    assert len(spans) == 24
    served = sum(r.bytes_returned for r in s3.proxy.requests if r.operation == "GetObject")
    assert all("range" in r.headers for r in s3.proxy.requests if r.operation == "GetObject")
    assert served < len(data) / 10, (served, len(data))  # the MP4 and WebP columns were never fetched

    with storage.open("v.parquet") as handle, ProcessedVideoReader(handle, "s3://inbox/v.parquet") as reader:
        assert inspect_video(reader).num_clips == 24


def test_errors_name_the_object_and_never_the_secret(s3):
    storage = S3Storage(s3.client, f"s3://no-such-bucket-{s3.bucket}/x")
    with pytest.raises(StorageError) as caught:
        storage.put("a.bin", b"1")
    message = str(caught.value)
    assert f"s3://no-such-bucket-{s3.bucket}/x/a.bin" in message and "NoSuchBucket" in message
    assert SECRET_KEY not in message


def test_a_lease_excludes_other_writers_and_names_its_holder(s3):
    storage = s3.storage("out")
    with storage.lock("_clip_assets/locks/f/p.lock", timeout_s=5) as lease:
        lease.check()
        held = r"locks/f/p\.lock: held by .* for longer than 1 s"
        with pytest.raises(StorageError, match=held), storage.lock("_clip_assets/locks/f/p.lock", timeout_s=1):
            pass
    assert storage.stat("_clip_assets/locks/f/p.lock") is None  # released
    with storage.lock("_clip_assets/locks/f/p.lock", timeout_s=1):
        pass


def test_an_expired_lease_is_taken_over(s3):
    storage = s3.storage("out")
    dead = json.dumps({"holder": "killed-host:123:abc", "expires_at": time.time() - 3600}).encode()
    storage.put("_clip_assets/locks/f/p.lock", dead)
    s3.proxy.reset_counts()
    with storage.lock("_clip_assets/locks/f/p.lock", timeout_s=5):
        # Taken over at the first look, without waiting rounds: a refused create, one read, one
        # conditional replace.
        assert (s3.proxy.counts["PutObject"], s3.proxy.counts["GetObject"]) == (2, 1)
        assert b"killed-host" not in storage.read("_clip_assets/locks/f/p.lock")


def test_a_lease_is_renewed_while_held_and_reports_when_lost(s3):
    storage = s3.storage("out")
    lease = ExpiringLease(storage, "_clip_assets/locks/f/p.lock", ttl_s=2, renew_every_s=0.2)
    lease.acquire(timeout_s=1)
    first = json.loads(storage.read("_clip_assets/locks/f/p.lock"))["expires_at"]
    time.sleep(0.7)
    assert json.loads(storage.read("_clip_assets/locks/f/p.lock"))["expires_at"] > first
    lease.check()
    storage.put("_clip_assets/locks/f/p.lock", b'{"holder": "usurper", "expires_at": 0}')  # someone took it
    time.sleep(0.7)
    with pytest.raises(StorageError, match="lease lost, taken over by another writer"):
        lease.check()
    lease.release()
    assert b"usurper" in storage.read("_clip_assets/locks/f/p.lock")  # a lost lease deletes nothing


@pytest.mark.timeout(900)  # the first LocalStack test may build its virtualenv (support/localstack.py)
@pytest.mark.parametrize("operation", ["PutObject", "UploadPart"])
@pytest.mark.parametrize("checksum", ["sha256", "md5"])
def test_a_body_corrupted_in_transit_is_refused_by_the_server_and_nothing_is_stored(localstack_s3, operation, checksum):
    """The checksum each request carries is what makes the server refuse a damaged body (moto stores it)."""
    options = dataclasses.replace(localstack_s3.connection.write_options(), checksum=checksum)  # 6 MiB multipart
    storage = S3Storage(localstack_s3.client, localstack_s3.url("out"), options)
    data = os.urandom(11 * MiB if operation == "UploadPart" else 3000)
    localstack_s3.proxy.inject(operation, count=1, corrupt=True)
    with pytest.raises(StorageError, match=r"cannot write s3://.*/out/clips/a\.mp4: BadDigest"):
        storage.put("clips/a.mp4", data)
    assert localstack_s3.proxy.injected == {f"{operation}:corrupt": 1}
    assert storage.stat("clips/a.mp4") is None
    assert localstack_s3.client.list_multipart_uploads(Bucket=localstack_s3.bucket).get("Uploads", []) == []
    storage.put("clips/a.mp4", data)  # the same bytes, undamaged, are accepted
    assert storage.read("clips/a.mp4") == data


@pytest.mark.timeout(900)  # the first LocalStack test may build its virtualenv (support/localstack.py)
def test_a_released_lease_leaves_no_lock_object(s3_implementation, request):
    """Release is a conditional DELETE. LocalStack 4.13 answers it 501 NotImplemented; then the lease is
    deleted by a HEAD and a plain DELETE, or it would stay until it expires and the next writer of the
    partition would wait TTL + clock skew (150 s)."""
    storage = s3_implementation.storage("out")
    with storage.lock("_clip_assets/locks/f/p.lock", timeout_s=5):
        assert storage.stat("_clip_assets/locks/f/p.lock") is not None
    refused_conditional = request.node.callspec.params["s3_implementation"] == "localstack"
    assert s3_implementation.proxy.counts["DeleteObject"] == (2 if refused_conditional else 1)
    assert storage.stat("_clip_assets/locks/f/p.lock") is None
