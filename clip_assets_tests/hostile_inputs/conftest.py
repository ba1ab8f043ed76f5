"""Malformed and hostile inputs: every one is rejected clearly, and nothing escapes the output root.

Each bad partition must fail alone, with a message naming the file and the field (and the row and clip
id for clip data), leave nothing of itself in the output, change nothing outside the output root, and
leave the good partitions byte-identical to a clean run. The corpus and the checks of a run are in
`clip_assets_tests/support/hostile_corpus.py` and `hostile_runs.py`; the tests here, by topic:

- `test_corpus.py`: all of the corpus in one batched range run, good videos on both sides and in the
  middle (one test per kind reads its own partition's outcome from that run);
- `test_single_runs.py`: a representative of each group in single-partition runs;
- `test_collisions.py`: two inputs that collide (paths, clip ids, outputs), in runs of their own;
- `test_keys_and_names.py`: partition keys that would take a whole batch down or alias another file,
  and odd names that are harmless.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dagster import DagsterInstance


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """Overrides the top conftest's for the tests of this folder: the same runs, with the instance's storage in memory.

    A sqlite instance costs ~25 ms per event on this machine, and every run stores dozens (a batched
    run one per partition and family before it even starts); the runs themselves are unchanged.
    """
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral
