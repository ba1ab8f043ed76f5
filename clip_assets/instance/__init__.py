"""The Dagster instance's pieces, apart from the code location: the event-log storages that instance files
name (`module: clip_assets.instance`), and the embedded instance the CLI and the demo run on."""

from clip_assets.instance.storages import (
    BatchedSqliteEventLogStorage,
    CachedPostgresEventLogStorage,
    embedded_instance_config,
    use_embedded_instance,
)

__all__ = [
    "BatchedSqliteEventLogStorage",
    "CachedPostgresEventLogStorage",
    "embedded_instance_config",
    "use_embedded_instance",
]
