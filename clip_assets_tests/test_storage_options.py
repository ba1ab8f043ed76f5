"""One path from configuration to storage: a URL and one flat mapping of options, whoever opens it."""

import pytest

from clip_assets.components.resources import StorageResource
from clip_assets.storage import StorageSpec, UnknownStorageError, backend_for, open_storage
from clip_assets.storage.options import StorageOptionError
from clip_assets.storage.s3 import S3Storage
from clip_assets_tests.support.s3_endpoint import SECRET_KEY


def test_options_as_strings_reach_a_real_endpoint(s3):
    """What YAML and the environment give (strings) opens the store exactly as typed options do."""
    storage = open_storage(
        s3.url("strings"),
        {"endpoint_url": s3.proxy.url, "addressing_style": "path", "max_attempts": "2", "checksum": "md5"},
    )
    assert isinstance(storage, S3Storage)
    assert storage.options.checksum == "md5"
    assert storage.client.meta.config.retries["total_max_attempts"] == 2
    storage.put("a/b.bin", b"payload")
    assert s3.client.get_object(Bucket=s3.bucket, Key="strings/a/b.bin")["Body"].read() == b"payload"
    assert s3.proxy.counts["PutObject"] == 1


def test_a_misspelt_option_is_refused_naming_it_and_what_the_backend_takes():
    with pytest.raises(StorageOptionError) as caught:
        open_storage("s3://bucket/prefix", {"adressing_style": "path"})
    message = str(caught.value)
    assert "'adressing_style'" in message and "S3" in message and "addressing_style" in message
    assert "\n" not in message


def test_a_value_that_does_not_fit_names_the_option_and_the_value():
    with pytest.raises(StorageOptionError, match=r"'max_attempts' of S3: 'many' is not a whole number"):
        open_storage("s3://bucket/prefix", {"max_attempts": "many"})
    with pytest.raises(StorageOptionError, match=r"'checksum' of S3: 'crc' is not one of 'sha256', 'md5'"):
        open_storage("s3://bucket/prefix", {"checksum": "crc"})


def test_one_mapping_serves_a_local_inbox_and_an_s3_output(tmp_path):
    """A dataset's options are for whichever store each root is on: a local folder leaves S3's alone."""
    local = open_storage(str(tmp_path / "inbox"), {"addressing_style": "path", "endpoint_url": "http://x"})
    local.put("k", b"v")
    assert (tmp_path / "inbox" / "k").read_bytes() == b"v"
    with pytest.raises(StorageOptionError, match="'no_such_option'"):
        open_storage(str(tmp_path / "inbox"), {"no_such_option": "1"})


def test_an_unknown_scheme_is_one_line_naming_the_url_and_the_schemes_there_are():
    with pytest.raises(UnknownStorageError) as caught:
        open_storage("s4://bucket/prefix")
    assert str(caught.value) == (
        "storage URL 's4://bucket/prefix': unknown scheme 's4'; use a local folder or one of s3://"
    )
    assert backend_for("S3://bucket").name == "S3"


def test_a_spec_opens_the_same_store_and_never_shows_its_options(s3):
    resource = StorageResource(url=s3.url("spec"), s3=s3.connection)
    spec = resource.spec()
    assert spec == StorageSpec(s3.url("spec"), spec.options)
    assert SECRET_KEY not in repr(spec) and "endpoint" not in repr(spec)
    spec.open().put("x", b"1")
    assert resource.get_storage().read("x") == b"1"


def test_lance_reaches_a_root_with_the_storage_s_own_options(tmp_path, s3):
    assert open_storage(str(tmp_path)).object_store_options() == {}
    options = open_storage(s3.url("t"), {"endpoint_url": s3.proxy.url, "addressing_style": "path"})
    found = options.object_store_options()
    assert found["aws_endpoint"] == s3.proxy.url and found["aws_virtual_hosted_style_request"] == "false"
