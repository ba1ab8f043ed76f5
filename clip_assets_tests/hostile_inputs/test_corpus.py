"""All of the corpus in one batched range run, good videos on both sides and in the middle: each bad
partition fails alone, the good ones are written exactly as a clean run writes them. And one input that
is refused as soon as its file is opened, before any run."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

from clip_assets.contract import ProcessedVideoError, ProcessedVideoReader
from clip_assets_tests.support.hostile_corpus import CASES, GOODS, SMALL_LIMITS, Case, meta_set, publish, rewrite
from clip_assets_tests.support.hostile_runs import (
    FAMILIES,
    NOTHING_LOST,
    batch_entry,
    difference,
    escaped_markers,
    failure_messages,
    manifests_of,
    materialized,
    message_problems,
    nemo_tree,
    run_range,
    tree_state,
)


@dataclass
class CorpusRun:
    root: Path
    inbox: Path
    output: Path
    keys: list[str]
    result: ExecuteInProcessResult
    messages: dict[str, str]
    materialized: dict[str, set[str]]
    clip_ids: dict[str, str | None]
    reference: dict[str, bytes]
    outside_before: dict[str, tuple[str, str]]
    # What must hold for every partition of the run (checked once; each also has a test of its own).
    goods_changed: str = ""
    outside_changed: str = ""

    def problems(self, case: Case) -> list[str]:
        problems = [f"in the same run, {what}" for what in (self.goods_changed, self.outside_changed) if what]
        for family in FAMILIES:
            if case.name in self.materialized[family]:
                problems.append(f"{family} materialized it")
                continue
            entry = batch_entry(self.messages.get(family, ""), case.name, self.keys)
            if entry is None:
                problems.append(f"{family}: its failure message does not list the partition")
                continue
            clip_id = self.clip_ids[case.name]
            problems += [f"{family}: {p}" for p in message_problems(case, entry, self.inbox, clip_id)]
        for family, written in manifests_of(self.output, case.name).items():
            problems.append(f"{family} wrote {len(written)} files of it: {written[:3]}")
        return problems


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    root = tmp_path_factory.mktemp("corpus")
    inbox, output = root / "inbox", root / "output"
    for good in GOODS:
        publish(inbox, good)
    publish(root, "outside.mp4")  # what hostile keys aim at, beside the inbox
    clip_ids = {case.name: case.build(inbox, case.name) for case in CASES}
    outside_before = tree_state(root, skip=(output,))

    with DagsterInstance.ephemeral() as clean:
        assert run_range(clean, inbox, output, list(GOODS), SMALL_LIMITS).success
    reference = nemo_tree(output)
    assert reference
    shutil.rmtree(output)

    middle = len(CASES) // 2
    names = [case.name for case in CASES]
    keys = [GOODS[0], *names[:middle], GOODS[1], *names[middle:], GOODS[2]]
    with DagsterInstance.ephemeral() as instance:
        result = run_range(instance, inbox, output, keys, SMALL_LIMITS)
        run = CorpusRun(
            root,
            inbox,
            output,
            keys,
            result,
            failure_messages(result),
            materialized(instance),
            clip_ids,
            reference,
            outside_before,
        )
        after = nemo_tree(output)
        if {key: after.get(key) for key in reference} != reference:
            run.goods_changed = "the good partitions' files differ from a clean run"
        outside_after = tree_state(root, skip=(output,))
        if outside_after != outside_before or escaped_markers(output):
            run.outside_changed = f"files outside the output root changed: {difference(outside_before, outside_after)}"
        yield run


@pytest.mark.parametrize("case", CASES, ids=[case.kind for case in CASES])
def test_each_bad_input_fails_alone_in_a_batched_run(corpus, case, reliability):
    problems = corpus.problems(case)
    assert not problems, "\n".join([f"{case.kind} (partition {case.name!r}):", *problems])
    reliability.record("bad input", case.kind, tried=1, handled=1, nothing_lost=NOTHING_LOST)


def test_the_batched_run_writes_the_good_partitions_exactly_as_a_clean_run(corpus):
    for family in FAMILIES:
        assert set(GOODS) <= corpus.materialized[family], family
        assert family in corpus.messages, f"{family} did not report the bad partitions"
        assert re.search(r"\w+: \d+ of \d+ partitions failed \(the other \d+ were written\)", corpus.messages[family])
    after = nemo_tree(corpus.output)
    assert {key: after.get(key) for key in corpus.reference} == corpus.reference
    for good in GOODS:
        assert set(manifests_of(corpus.output, good)) == set(FAMILIES)


def test_the_batched_run_changes_nothing_outside_the_output_root(corpus):
    after = tree_state(corpus.root, skip=(corpus.output,))
    assert after == corpus.outside_before, difference(corpus.outside_before, after)
    assert escaped_markers(corpus.output) == []


def test_the_batched_run_leaves_no_file_that_no_manifest_owns(corpus):
    """Whatever was written is the good partitions' or recorded by some partition's manifest (never lost track of)."""
    owned = set(corpus.reference)
    for key in corpus.keys:
        for written in manifests_of(corpus.output, key).values():
            owned.update(written)
    unowned = sorted(set(nemo_tree(corpus.output)) - owned)
    assert unowned == []


# --------------------------------------------------------------------------------------------------
# Without Dagster: what would hang a run if it got that far


def test_a_chunk_count_no_file_could_hold_is_refused_when_the_file_is_opened(tmp_path):
    """num_clip_chunks = 10**12 for 2 clips: video_summaries would build range(10**12) chunk summaries."""
    path = publish(tmp_path, "many-chunks.mp4")
    rewrite(path, meta=meta_set(num_clip_chunks=10**12))
    with pytest.raises(ProcessedVideoError) as caught:
        ProcessedVideoReader(str(path), "many-chunks.mp4.parquet", limits=SMALL_LIMITS.to_limits()).close()
    assert caught.value.field == "clip_assets.num_clip_chunks"
