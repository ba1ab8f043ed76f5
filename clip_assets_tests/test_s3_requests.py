"""What the S3 backend actually sends, as the test proxy in front of the endpoint records it.

moto accepts requests a stricter store would refuse or treat differently (it ignores an `If-Match` on a
multipart complete, and takes any mix of checksums), so these tests look at the requests themselves.
"""

from __future__ import annotations

import base64
import os
import threading

from clip_assets.storage.s3 import S3Storage
from clip_assets_tests.support.s3_endpoint import S3Endpoint, s3_connection_via

MiB = 1024 * 1024


def test_a_conditional_multipart_write_carries_its_condition_on_the_complete(s3):
    storage = s3.storage("out")
    assert storage.put_if_absent("big.bin", os.urandom(7 * MiB)) is not None
    (complete,) = [r for r in s3.proxy.requests if r.operation == "CompleteMultipartUpload"]
    assert complete.headers["if-none-match"] == "*"

    current = storage.stat("big.bin")
    s3.proxy.reset_counts()
    assert storage.put_if_match("big.bin", os.urandom(7 * MiB), current.etag) is not None
    (complete,) = [r for r in s3.proxy.requests if r.operation == "CompleteMultipartUpload"]
    assert complete.headers["if-match"] == f'"{current.etag}"'


def _race(storage: S3Storage, key: str, payloads: list[bytes]) -> list[object]:
    """Every payload written to `key` with put_if_absent by its own thread, all released at once."""
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


def test_of_two_multipart_writers_racing_for_one_key_exactly_one_wins(s3, reliability):
    """Both pass the HEAD (the key is new to both); the conditional complete lets only one create it."""
    storage = s3.storage("out")
    for round_number in range(5):
        key = f"clips/race-{round_number}.mp4"
        payloads = [os.urandom(7 * MiB), os.urandom(7 * MiB)]
        answers = _race(storage, key, payloads)
        winners = [i for i, answer in enumerate(answers) if answer is not None]
        assert len(winners) == 1, f"round {round_number}: {len(winners)} writers created {key}"
        assert storage.read(key) == payloads[winners[0]]
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []  # the loser's aborted
    reliability.record(
        "fault",
        "two writers creating one large key at once (S3 multipart, If-None-Match on the complete)",
        tried=5,
        handled=5,
        nothing_lost="exactly one created it, with its bytes; the other's upload aborted",
    )


def test_md5_mode_sends_content_md5_and_no_flexible_checksum(s3):
    """For stores without flexible checksums: every upload request carries Content-MD5 and nothing else
    (botocore 1.36+ adds a CRC32 to every upload unless the client is told to checksum only when required)."""
    s3_md5 = S3Endpoint(s3.proxy, s3.bucket, s3_connection_via(s3.proxy, checksum="md5"))
    storage = s3_md5.storage("out")
    storage.put("a.bin", b"abc")
    storage.put_if_absent("big.bin", os.urandom(7 * MiB))
    uploads = [r for r in s3_md5.proxy.requests if r.operation in ("PutObject", "UploadPart")]
    assert len(uploads) == 3  # one PUT, two parts
    for request in uploads:
        assert request.headers["content-md5"] == base64.b64encode(bytes.fromhex(request.body_md5)).decode()
        flexible = sorted(
            name for name in request.headers if name.startswith(("x-amz-checksum-", "x-amz-sdk-checksum"))
        )
        assert flexible == [], f"{request.operation} sent {flexible}"
    for request in s3_md5.proxy.requests:
        assert "x-amz-sdk-checksum-algorithm" not in request.headers, request.operation
