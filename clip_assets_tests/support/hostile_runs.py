"""What a run of bad inputs left behind, for the tests in `clip_assets_tests/hostile_inputs/`: each family's
failure message and what it names, the output and the tree around it, the manifests; and a run over a
range of partitions, as the sensor starts one.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import AssetKey, ExecuteInProcessResult, materialize

from clip_assets import layout
from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets.components.resources import ValidationLimitsResource, WriterSettingsResource
from clip_assets.engine.manifest import PartitionManifest
from clip_assets.families import FAMILIES as OUTPUT_FAMILIES
from clip_assets_tests.support.dataset import FAMILY_ASSETS, PARTITIONS_NAME, build_resources, processed_videos
from clip_assets_tests.support.hostile_corpus import INPUT_PATH, MARKER, Case

FAMILIES = tuple(family.name for family in OUTPUT_FAMILIES)
# What is not part of a partition's output: lock files are taken before the input is inspected, and a
# refused partition's failure record is what says why (test_failures.py).
LOCKS = Path(layout.INTERNAL_PREFIX) / "locks"
FAILURE_RECORDS = Path(layout.VIDEO_ERRORS)
NOTHING_LOST = (
    "no manifest, file or materialization of the partition; good partitions byte-identical to a clean run; "
    "nothing outside the output root changed"
)


def tree_state(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[str, str]]:
    """Every file (sha256), folder and symlink below `root`, except below `skip`."""
    state: dict[str, tuple[str, str]] = {}
    if not root.exists():
        return state
    for here, folders, files in _walk(root):
        folders[:] = sorted(f for f in folders if here / f not in skip)
        for folder in folders:
            state[(here / folder).relative_to(root).as_posix() + "/"] = ("dir", "")
        for name in files:
            path = here / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[relative] = ("link", str(path.readlink()))
            else:
                state[relative] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def _walk(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    for here, folders, files in os.walk(root):
        yield Path(here), folders, files


def nemo_tree(output: Path) -> dict[str, bytes]:
    """The NeMo part of the output tree (everything but clip-assets' own bookkeeping), with contents."""
    if not output.exists():
        return {}
    return {
        path.relative_to(output).as_posix(): path.read_bytes()
        for path in output.rglob("*")
        if path.is_file() and path.relative_to(output).parts[0] != layout.INTERNAL_PREFIX
    }


def escaped_markers(output: Path) -> list[str]:
    """Files named with the marker beside or above the output root (below `/`: escapes go up `..` by `..`)."""
    found = []
    for ancestor in [p for p in output.parents if p.parent != p][:4]:
        for pattern in (f"*{MARKER}*", f"*/*{MARKER}*"):
            found += [str(p) for p in ancestor.glob(pattern) if output not in p.parents and p.parent != output]
    return found


def difference(before: dict, after: dict) -> str:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    return f"added {added[:8]}, removed {removed[:8]}, changed {changed[:8]}"


def failure_messages(result: ExecuteInProcessResult) -> dict[str, str]:
    """Each family's failure message, as the UI shows it under the step that writes it (one step writes
    every family of the run's partitions)."""
    messages = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            messages.update(dict.fromkeys(FAMILIES, (error.cause or error).message))
    return messages


def batch_entry(message: str, key: str, keys: list[str]) -> str | None:
    """A partition's part of a PartitionsFailed message (`key: Error: message`, maybe several lines)."""
    lines = message.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(f"{key}: ")]
    if not starts:
        return None
    others = tuple(f"{k}: " for k in keys if k != key)
    end = starts[0] + 1
    while end < len(lines) and not lines[end].startswith(others):
        end += 1
    return "\n".join(lines[starts[0] : end])


def message_problems(case: Case, text: str, inbox: Path, clip_id: str | None) -> list[str]:
    """What the message fails to say: the file, the field, the row and the clip id."""
    problems = []
    file_text = case.names_file or f"{inbox.resolve()}/{case.name}.parquet"
    if file_text not in text:
        problems.append(f"does not name the file {file_text!r}")
    named = re.findall(r"field '([^']*)'", text)
    if not named:
        problems.append("names no field")
    elif case.fields and not set(named) & set(case.fields):
        problems.append(f"names field {named}, expected one of {list(case.fields)}")
    if case.row is not None and not re.search(rf"\brow {case.row}\b", text):
        problems.append(f"does not name row {case.row}")
    if clip_id and clip_id not in text:
        problems.append(f"does not name clip {clip_id}")
    if case.mentions and case.mentions not in text:
        problems.append(f"does not mention {case.mentions!r}")
    if problems:
        problems.append(f"message: {text[:400]!r}")
    return problems


def manifests_of(output: Path, key: str) -> dict[str, list[str]]:
    """Output keys a partition's manifests record, per family (a partial write records one too)."""
    found = {}
    for family in FAMILIES:
        path = output / layout.manifest_key(family, key)
        if path.exists():
            found[family] = sorted(PartitionManifest.from_bytes(path.read_bytes()).entries)
    return found


def run_range(
    instance: Any, inbox: Path, output: Path, keys: list[str], limits: ValidationLimitsResource | None = None
) -> ExecuteInProcessResult:
    """One run over a range of partitions, as the sensor and batched backfills start them."""
    known = set(instance.get_dynamic_partitions(PARTITIONS_NAME))
    instance.add_dynamic_partitions(PARTITIONS_NAME, [k for k in keys if k not in known])
    resources = build_resources(str(inbox), str(output), WriterSettingsResource(input_path=INPUT_PATH))
    if limits is not None:
        resources["validation_limits"] = limits
    return materialize(
        [processed_videos, *FAMILY_ASSETS],
        instance=instance,
        resources=resources,
        tags={RANGE_START_TAG: keys[0], RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )


def materialized(instance: Any) -> dict[str, set[str]]:
    return {family: set(instance.get_materialized_partitions(AssetKey(family))) for family in FAMILIES}


def single_run_problems(result: ExecuteInProcessResult, case: Case, inbox: Path, clip_id: str | None) -> list[str]:
    """A single-partition run of a bad input: every family fails, each naming file, field, row, clip."""
    problems = []
    if result.success:
        return ["the run succeeded"]
    messages = failure_messages(result)
    succeeded = sorted(set(FAMILIES) - set(messages))
    if succeeded:
        problems.append(f"families {succeeded} did not fail (they materialized the partition)")
    for family, message in sorted(messages.items()):
        problems += [f"{family}: {p}" for p in message_problems(case, message, inbox, clip_id)]
    return problems
