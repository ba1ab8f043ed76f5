import pytest
from dagster import DagsterInvalidDefinitionError, DynamicPartitionsDefinition, StaticPartitionsDefinition
from hypothesis import given
from hypothesis import strategies as st

from clip_assets.contract.partition_keys import decode_partition_key, encode_partition_key


def test_plain_paths_are_their_own_keys():
    assert encode_partition_key("cam1/2024/street walk.mp4.parquet") == "cam1/2024/street walk.mp4"
    assert decode_partition_key("cam1/2024/street walk.mp4") == "cam1/2024/street walk.mp4.parquet"


def test_refuses_files_that_are_not_parquet():
    with pytest.raises(ValueError, match=r"not a \.parquet"):
        encode_partition_key("a.mp4")


@given(st.text(min_size=1).map(lambda s: s + ".parquet"))
def test_encoding_is_reversible_and_accepted_by_dagster(relative_path):
    key = encode_partition_key(relative_path)
    assert decode_partition_key(key) == relative_path
    StaticPartitionsDefinition([key])  # Dagster's public check of the characters a partition key may hold
    DynamicPartitionsDefinition(name="p").build_add_request([key])


@pytest.mark.parametrize("key", ["2024-01-01...2024-01-02", "a\nb", "a\x00b"])
def test_dagsters_check_refuses_what_the_ui_cannot_show(key):
    """The check above can fail: range syntax and control characters are refused."""
    with pytest.raises(DagsterInvalidDefinitionError, match="invalid substrings"):
        StaticPartitionsDefinition([key])


@given(st.text(min_size=1), st.text(min_size=1))
def test_distinct_files_never_share_a_key(a, b):
    if a != b:
        assert encode_partition_key(a + ".parquet") != encode_partition_key(b + ".parquet")
