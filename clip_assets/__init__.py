"""clip-assets: processed videos in, NeMo Curator-compatible curated outputs out, as Dagster assets.

`defs` is loaded lazily so that the pure modules (contract, layout, artifacts) import without Dagster's
start-up cost; `dagster ... -m clip_assets` still finds it.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from clip_assets.definitions import defs

        return defs
    raise AttributeError(name)


def __dir__() -> list[str]:
    return ["defs"]
