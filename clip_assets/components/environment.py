"""Environment variables that configure a deployment, and the embedded defaults the demo uses."""

from __future__ import annotations

import os

INBOX_VAR = "CLIP_ASSETS_INBOX"
OUTPUT_VAR = "CLIP_ASSETS_OUTPUT"
INPUT_PATH_VAR = "CLIP_ASSETS_INPUT_PATH"
EMBEDDING_ALGORITHM_VAR = "CLIP_ASSETS_EMBEDDING_ALGORITHM"
# "threads" or "ray": where a run's partitions are written (WriterSettings.parallel_backend).
PARALLEL_BACKEND_VAR = "CLIP_ASSETS_PARALLEL_BACKEND"
EMBEDDING_VERSION_VAR = "CLIP_ASSETS_EMBEDDING_VERSION"
# Read when the code location loads: how many partitions one run of a backfill (or of the sensor)
# handles, and how often the sensor lists the inbox.
PARTITIONS_PER_RUN_VAR = "CLIP_ASSETS_PARTITIONS_PER_RUN"
SENSOR_INTERVAL_VAR = "CLIP_ASSETS_SENSOR_INTERVAL_S"
# S3 connection settings botocore has no environment variable for (endpoint, region, profile and
# credentials come from the standard AWS_* variables and files).
S3_ADDRESSING_STYLE_VAR = "CLIP_ASSETS_S3_ADDRESSING_STYLE"
S3_CHECKSUM_VAR = "CLIP_ASSETS_S3_CHECKSUM"
S3_SSE_VAR = "CLIP_ASSETS_S3_SSE"
S3_SSE_KMS_KEY_ID_VAR = "CLIP_ASSETS_S3_SSE_KMS_KEY_ID"

DATA_DIR = "clip-assets-data"
DEFAULTS = {
    INBOX_VAR: f"{DATA_DIR}/inbox",
    OUTPUT_VAR: f"{DATA_DIR}/output",
    INPUT_PATH_VAR: "",
    EMBEDDING_ALGORITHM_VAR: "cosmos-embed1",
    PARALLEL_BACKEND_VAR: "threads",
    EMBEDDING_VERSION_VAR: "",
    PARTITIONS_PER_RUN_VAR: "25",
    SENSOR_INTERVAL_VAR: "30",
    S3_ADDRESSING_STYLE_VAR: "auto",
    S3_CHECKSUM_VAR: "sha256",
    S3_SSE_VAR: "",
    S3_SSE_KMS_KEY_ID_VAR: "",
}


def configured(name: str) -> str:
    """The variable's value, or the embedded default (relative paths resolve against the working directory)."""
    return os.environ.get(name, DEFAULTS[name])
