"""Environment variables that configure a deployment, and the embedded defaults the demo uses."""

from __future__ import annotations

import os

INBOX_VAR = "CLIP_ASSETS_INBOX"
OUTPUT_VAR = "CLIP_ASSETS_OUTPUT"
INPUT_PATH_VAR = "CLIP_ASSETS_INPUT_PATH"
EMBEDDING_ALGORITHM_VAR = "CLIP_ASSETS_EMBEDDING_ALGORITHM"

DATA_DIR = "clip-assets-data"
DEFAULTS = {
    INBOX_VAR: f"{DATA_DIR}/inbox",
    OUTPUT_VAR: f"{DATA_DIR}/output",
    INPUT_PATH_VAR: "",
    EMBEDDING_ALGORITHM_VAR: "cosmos-embed1",
}


def configured(name: str) -> str:
    """The variable's value, or the embedded default (relative paths resolve against the working directory)."""
    return os.environ.get(name, DEFAULTS[name])
