"""The only place that assembles Definitions: every curated dataset under `defs/` (one YAML file each).

Runs execute in process: a run's step writes its partitions itself (bounded thread pools inside),
and one process per run is what a deployment's run launcher already provides.
"""

import warnings
from pathlib import Path

from dagster import BetaWarning, Definitions, in_process_executor
from dagster.components import load_from_defs_folder

# Dagster 1.13 passes a beta parameter to itself when it turns a multi-asset's checks into assets
# definitions, and warns about it on every load of the code location (in `dagster dev`, every command).
warnings.filterwarnings(
    "ignore", message="Parameter `execution_type` of function `AssetsDefinition.__init__`", category=BetaWarning
)

defs = Definitions.merge(
    load_from_defs_folder(path_within_project=Path(__file__).parent),
    Definitions(executor=in_process_executor),
)
