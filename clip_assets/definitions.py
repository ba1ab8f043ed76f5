"""The only place that assembles Definitions: every curated dataset under `defs/` (one YAML file each).

Runs execute in process: a run's step writes its partitions itself (bounded thread pools inside),
and one process per run is what a deployment's run launcher already provides.
"""

from pathlib import Path

from dagster import Definitions, in_process_executor
from dagster.components import load_from_defs_folder

defs = Definitions.merge(
    load_from_defs_folder(path_within_project=Path(__file__).parent),
    Definitions(executor=in_process_executor),
)
