"""A representative of each group of the corpus in single-partition runs (`run_partition`)."""

from __future__ import annotations

import json

from clip_assets_tests.support.dataset import materialize_partition
from clip_assets_tests.support.hostile_corpus import CASE_BY_KIND, GOODS, publish
from clip_assets_tests.support.hostile_runs import (
    FAILURE_RECORDS,
    LOCKS,
    NOTHING_LOST,
    difference,
    escaped_markers,
    single_run_problems,
    tree_state,
)

REPRESENTATIVES = [
    "footer: truncated file",
    "column type: chunk_index as string",
    "metadata: not JSON",
    "format_version: 3",
    "span: NaN",
    "window: duplicate",
    "embedding: mixed dimensions",
    "clip id: duplicate after derivation",
    "clip id: relative path",
    "mp4: ftyp header then garbage",
    "webp: RIFF header then garbage",
    "caption: model name with NUL",
    "extra_metadata: overrides clip_location",
    "source_video: .. after input_path",
    "source_video: string prefix of input_path",
    "partition key: %2E%2E/outside.mp4",
]


def test_representative_bad_inputs_fail_alone_in_single_partition_runs(
    tmp_path, inbox, output, run_partition, reliability
):
    """One of each group through `run_partition`: all five families fail, each naming file, field, row, clip."""
    publish(inbox, GOODS[0])
    publish(tmp_path, "outside.mp4")
    cases = [CASE_BY_KIND[kind] for kind in REPRESENTATIVES]
    clip_ids = {case.name: case.build(inbox, case.name) for case in cases}
    assert run_partition(GOODS[0]).success
    output_before = tree_state(output, skip=(output / LOCKS, output / FAILURE_RECORDS))
    outside_before = tree_state(tmp_path, skip=(output,))

    failed = {}
    for case in cases:
        result = run_partition(case.name)
        problems = single_run_problems(result, case, inbox, clip_ids[case.name])
        if any(e.event_type_value == "ASSET_MATERIALIZATION" for e in result.all_events):
            problems.append("a materialization was recorded")
        output_after = tree_state(output, skip=(output / LOCKS, output / FAILURE_RECORDS))
        if output_after != output_before:
            problems.append(f"the output changed: {difference(output_before, output_after)}")
        outside_after = tree_state(tmp_path, skip=(output,))
        if outside_after != outside_before or escaped_markers(output):
            problems.append(f"files outside the output root changed: {difference(outside_before, outside_after)}")
        if problems:
            failed[case.kind] = problems
        else:
            reliability.record("bad input", case.kind, tried=1, handled=1, nothing_lost=NOTHING_LOST)
    assert not failed, json.dumps(failed, indent=1)


def test_representative_bad_inputs_on_a_store_fail_alone_and_leave_it_as_it_was(tmp_path, inbox, store, instance):
    """The same representatives into an output on S3, Azure and GCS: each run fails naming file, field,
    row and clip; the store keeps exactly what the good partition wrote, all of it below the root."""
    publish(inbox, GOODS[0])
    cases = [CASE_BY_KIND[kind] for kind in REPRESENTATIVES]
    clip_ids = {case.name: case.build(inbox, case.name) for case in cases}
    output = store.url("out")
    assert materialize_partition(instance, GOODS[0], str(inbox), output, s3=store.s3).success
    transient = (f"{LOCKS}/", f"{FAILURE_RECORDS}/")
    storage = store.storage("out")

    def state() -> dict[str, str | None]:
        return {i.key: storage.stat(i.key).sha256 for i in storage.list() if not i.key.startswith(transient)}

    before = state()
    failed = {}
    for case in cases:
        result = materialize_partition(instance, case.name, str(inbox), output, s3=store.s3)
        problems = single_run_problems(result, case, inbox, clip_ids[case.name])
        after = state()
        if after != before:
            problems.append(f"the store changed: {sorted(set(after) ^ set(before))}")
        if problems:
            failed[case.kind] = problems
    assert not failed, json.dumps(failed, indent=1)
    stored = store.keys()
    assert stored and all(key.startswith("out/") for key in stored)
