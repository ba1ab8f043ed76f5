"""Partition keys that must not take a batch down or alias another file, and names that are odd but
harmless: written literally, inside the root, or refused clearly."""

from __future__ import annotations

import json

import pytest

from clip_assets_tests.support.hostile_corpus import (
    ANY_KEY_FIELD,
    INPUT_PATH,
    MARKER,
    SOURCE,
    Case,
    clips_for,
    key_case,
    publish,
    vector,
)
from clip_assets_tests.support.hostile_runs import (
    FAILURE_RECORDS,
    FAMILIES,
    LOCKS,
    batch_entry,
    escaped_markers,
    failure_messages,
    manifests_of,
    materialized,
    message_problems,
    nemo_tree,
    run_range,
    single_run_problems,
    tree_state,
)

# --------------------------------------------------------------------------------------------------
# Partition keys that must not take a batch down, or alias another file


def test_partition_keys_the_inbox_cannot_stat_fail_alone_in_a_batch(tmp_path, inbox, output, instance, reliability):
    """`good-a.mp4.parquet/x` (the file is not a folder: ENOTDIR) and a 300-byte name (ENAMETOOLONG)."""
    publish(inbox, "good-a.mp4")
    publish(inbox, "good-z.mp4")
    hostile = ["good-a.mp4.parquet/x", "y" * 300]
    keys = ["good-a.mp4", *hostile, "good-z.mp4"]
    result = run_range(instance, inbox, output, keys)
    done = materialized(instance)
    problems = [
        f"{family}: materialized {sorted(done[family])}"
        for family in FAMILIES
        if done[family] != {"good-a.mp4", "good-z.mp4"}
    ]
    messages = failure_messages(result)
    for key in hostile:
        case = Case(f"partition key: {key[:20]}", key_case, ANY_KEY_FIELD, key=key, names_file=key)
        for family in FAMILIES:
            entry = batch_entry(messages.get(family, ""), key, keys)
            if entry is None:
                problems.append(f"{family}: no entry for {key[:20]!r} in {messages.get(family, '')[:300]!r}")
            else:
                problems += [f"{family}: {p}" for p in message_problems(case, entry, inbox, None)]
    assert not problems, "\n".join(problems)
    reliability.record(
        "bad input",
        "partition key: names a path the inbox cannot stat",
        tried=len(hostile),
        handled=len(hostile),
        nothing_lost="the good partitions on both sides materialized in every family",
    )


@pytest.mark.parametrize("alias", ["good-a%2Emp4", "good%2Da.mp4", "%67ood-a.mp4"])
def test_a_non_canonical_partition_key_is_refused_not_aliased(
    tmp_path, inbox, output, run_partition, alias, reliability
):
    """`alias` decodes to good-a.mp4.parquet, whose own key is `good-a.mp4`: two partitions for one file."""
    publish(inbox, "good-a.mp4")
    assert run_partition("good-a.mp4").success
    output_before = tree_state(output, skip=(output / LOCKS, output / FAILURE_RECORDS))
    result = run_partition(alias)
    case = Case(f"partition key: {alias}", key_case, "<partition key>", key=alias, names_file=alias)
    problems = single_run_problems(result, case, inbox, None)
    if manifests_of(output, alias):
        problems.append(f"{alias} has manifests: it owns good-a.mp4's files too")
    if tree_state(output, skip=(output / LOCKS, output / FAILURE_RECORDS)) != output_before:
        problems.append("the output changed")
    assert not problems, "\n".join(problems)
    reliability.record(
        "bad input",
        "partition key: non-canonical spelling of another file's key",
        tried=1,
        handled=1,
        nothing_lost="output unchanged, no manifest for the alias",
    )


# --------------------------------------------------------------------------------------------------
# Names that are odd but harmless: written literally, inside the root, or refused clearly


def test_odd_names_stay_literal_and_inside_the_root(tmp_path, inbox, output, instance):
    """Percent escapes, bidi and zero-width characters, `~` and `:` in paths; `/` and `..` in model names."""
    sources = {
        "odd-percent.mp4": f"/videos/%2e%2e/%2e%2e/{MARKER}.mp4",
        "odd-bidi.mp4": "/videos/cam\u202egpj.mp4",
        "odd-zero-width.mp4": "/videos/.\u200b./x.mp4",
        "odd-tilde-colon.mp4": "/videos/~/c:/x.mp4",
    }
    for name, source in sources.items():
        publish(inbox, name, source=source)
    models = clips_for("odd-models.mp4")
    models[0].windows[0].captions = {"Qwen/Qwen2-VL": "slash", "../../x": "dots"}
    models[0].embeddings["../../evil"] = vector()
    publish(inbox, "odd-models.mp4", models)
    outside_before = tree_state(tmp_path, skip=(output,))
    keys = ["odd-bidi.mp4", "odd-models.mp4", "odd-percent.mp4", "odd-tilde-colon.mp4", "odd-zero-width.mp4"]
    result = run_range(instance, inbox, output, keys)
    messages = failure_messages(result)
    done = materialized(instance)
    for name, source in sources.items():
        relative = source[len(INPUT_PATH) + 1 :]
        if all(name in done[family] for family in FAMILIES):
            assert (output / f"processed_videos/{relative}.json").is_file(), name
        else:  # refusing is fine too, when it is said clearly
            case = Case(name, key_case, SOURCE, key=name)
            for family in FAMILIES:
                entry = batch_entry(messages.get(family, ""), name, keys) or ""
                assert not message_problems(case, entry, inbox, None), (family, entry)
    assert all("odd-models.mp4" in done[family] for family in FAMILIES)
    meta = json.loads((output / f"metas/v0/{models[0].uuid}.json").read_text())
    assert meta["windows"][0]["Qwen/Qwen2-VL_caption"] == "slash" and meta["windows"][0]["../../x_caption"] == "dots"
    assert not any("evil" in key or "Qwen" in key or key.startswith("x_") for key in nemo_tree(output))
    assert tree_state(tmp_path, skip=(output,)) == outside_before
    assert escaped_markers(output) == []
    for key in nemo_tree(output):
        assert (output / key).resolve().is_relative_to(output.resolve()), key
