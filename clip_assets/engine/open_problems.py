"""What a family's `intact` check found and nobody has repaired yet, kept in the output root between checks.

A check covers the partitions of its run. Without a memory, a check of other partitions that passes
would turn the check green while a damaged file it found earlier is still damaged. So each check
records, per family, the problems it found by partition; the next check re-verifies those partitions
as well as its own, and a partition leaves the record only when a check finds it sound (after a run
rewrote it, or a partition that was removed). Free of Dagster.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence

from clip_assets import layout
from clip_assets.families.base import Problem
from clip_assets.storage import Storage, read_if_exists

LOCK_TIMEOUT_S = 300.0


def load_open_problems(storage: Storage, family: str) -> dict[str, list[Problem]]:
    """The problems last found and not yet found repaired, by partition; {} when none."""
    data = read_if_exists(storage, layout.check_problems_key(family))
    if data is None:
        return {}
    document = json.loads(data)
    return {
        partition: [Problem(str(found["key"]), str(found["problem"])) for found in problems]
        for partition, problems in document.get("partitions", {}).items()
    }


def record_checked(
    storage: Storage,
    family: str,
    checked: Mapping[str, Sequence[Problem]],
    gone: Collection[str] = (),
) -> dict[str, list[Problem]]:
    """Replace what is recorded for the `checked` partitions with what was found now (nothing: sound), drop
    partitions that are `gone`, and return every problem still open, these and earlier checks' alike.

    Under a lock, so two checks of one family never drop each other's findings; a check that changes
    nothing recorded takes no lock and writes nothing (a re-run of a sound dataset costs reads only).
    """
    before = load_open_problems(storage, family)
    if _merged(before, checked, gone) == before:
        return before
    with storage.lock(layout.check_problems_lock_key(family), LOCK_TIMEOUT_S):
        before = load_open_problems(storage, family)
        open_problems = _merged(before, checked, gone)
        if not open_problems:
            if before:
                storage.delete(layout.check_problems_key(family))
        elif open_problems != before:
            document = {
                "family": family,
                "partitions": {
                    partition: [{"key": p.key, "problem": p.problem} for p in problems]
                    for partition, problems in sorted(open_problems.items())
                },
            }
            storage.put(layout.check_problems_key(family), json.dumps(document, indent=1).encode())
    return open_problems


def _merged(
    before: Mapping[str, list[Problem]], checked: Mapping[str, Sequence[Problem]], gone: Collection[str]
) -> dict[str, list[Problem]]:
    """The open problems once this check's findings are in."""
    open_problems = dict(before)
    for partition, problems in checked.items():
        if problems:
            open_problems[partition] = list(problems)
        else:
            open_problems.pop(partition, None)
    for partition in gone:
        open_problems.pop(partition, None)
    return open_problems
