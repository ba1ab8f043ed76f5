"""The clip index's rows from a partition's outputs (pure): filter reasons, and errors naming file and field."""

import numpy as np
import pytest

from clip_assets import layout
from clip_assets.dataset import clip_index as ci
from clip_assets_tests.support.dataset import synthetic_outputs

ROOT = "/data/out"


def chunk(passed, filtered, by_motion, by_aesthetic):
    return {
        "clip_chunk_index": 0,
        "clips": passed,
        "filtered_clips": filtered,
        "num_clips_filtered_by_motion": by_motion,
        "num_clips_filtered_by_aesthetic": by_aesthetic,
    }


@pytest.mark.parametrize(("by_motion", "by_aesthetic", "reason"), [(2, 0, "motion"), (0, 2, "aesthetic"), (1, 1, None)])
def test_filter_reason_only_where_the_chunk_counters_leave_no_doubt(by_motion, by_aesthetic, reason):
    outputs = synthetic_outputs(ROOT, "v.mp4", np.ones((3, 4), dtype=np.float32), filtered_every=3)
    ids = sorted(doc["span_uuid"] for doc in outputs.documents.values())
    outputs.chunks = [chunk(ids[:1], ids[1:], by_motion, by_aesthetic)]
    rows = ci.clip_rows(outputs).to_pylist()
    # The chunk stats decide what passed (two filtered here), whatever the clip's location says.
    assert [(r[ci.PASSED], r[ci.FILTERED_BY]) for r in rows] == [(True, None), (False, reason), (False, reason)]


def test_a_vector_of_another_size_names_its_parquet_file():
    outputs = synthetic_outputs(ROOT, "v.mp4", np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ci.ClipIndexError) as raised:
        ci.clip_rows(outputs, {ci.EmbeddingModel("cosmos-embed1"): 8})
    parquet = layout.full_location(ROOT, layout.chunk_embedding_key("cosmos-embed1", "/videos/v.mp4", 0))
    message = str(raised.value)
    assert message.startswith(f"{parquet}: field 'embedding' of clip ") and "has 4 values" in message


def test_a_document_naming_another_clip_names_the_file():
    outputs = synthetic_outputs(ROOT, "v.mp4", np.ones((2, 4), dtype=np.float32))
    (first, document), (second, _) = sorted(outputs.documents.items())
    outputs.documents[first] = {**document, "span_uuid": second.removeprefix("metas/v0/").removesuffix(".json")}
    with pytest.raises(ci.ClipIndexError, match=rf"^{ROOT}/{first}: field 'span_uuid'"):
        ci.clip_rows(outputs)


def test_a_score_that_is_not_a_number_names_the_file_and_field():
    outputs = synthetic_outputs(ROOT, "v.mp4", np.ones((1, 4), dtype=np.float32))
    ((key, document),) = outputs.documents.items()
    outputs.documents[key] = {**document, "aesthetic_score": "high"}
    with pytest.raises(ci.ClipIndexError, match=rf"^{ROOT}/{key}: field 'aesthetic_score' is 'high', not a number"):
        ci.clip_rows(outputs)
