"""The embedded instance's batched event log records what Dagster's default storage records, and the
recent-partitions cache never hides this process's own additions (SQLite and real PostgreSQL)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as db
import yaml
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetPartitionStatus,
    BackfillPolicy,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DataVersion,
    EventLogEntry,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
    instance_for_test,
    materialize,
)
from dagster._core.events import StepMaterializationData

from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG, video_partitions
from clip_assets.components.resources import WriterSettingsResource
from clip_assets.instance.storages import (
    BATCH_SIZE_VAR,
    DEFAULT_EVENT_BATCH_SIZE,
    PARTITIONS_CACHE_SECONDS,
    AssetEventBatches,
    BatchedSqliteEventLogStorage,
    CachedPostgresEventLogStorage,
    RecentDynamicPartitions,
    embedded_instance_config,
    use_embedded_instance,
)
from clip_assets_tests.support.dataset import FAMILY_ASSETS, PARTITIONS_NAME, build_resources, processed_videos
from clip_assets_tests.support.deployment import Database, fresh_database
from clip_assets_tests.support.factories import make_clips, write_video

NAMES = ["a.mp4", "b.mp4", "c.mp4"]
BAD = "b.mp4"
FAMILY_KEYS = [
    AssetKey(name) for name in ["clip_files", "clip_previews", "clip_embeddings", "clip_metadata", "video_summaries"]
]
# Every table store_event and store_event_batch write, with the columns that identify a row.
INDEX_TABLES = {
    "event_logs": "id",
    "asset_keys": "asset_key",
    "asset_event_tags": "event_id, key",
}


# A run over a range of partitions computes no data version, so the families' events of `run_range` carry no
# tag either storage indexes: this asset's do (a data version it gives), in one batch of its range's events,
# so tag rows are written by both paths and compared too.
VERSIONED_PARTITIONS = StaticPartitionsDefinition(["p1", "p2", "p3"])


@asset(partitions_def=VERSIONED_PARTITIONS, backfill_policy=BackfillPolicy.single_run())
def versioned() -> MaterializeResult:
    return MaterializeResult(data_version=DataVersion("v1"))


def run_versioned(instance: DagsterInstance) -> str:
    """`versioned` over its whole range in one run: its three materializations are one batch."""
    result = materialize(
        [versioned], instance=instance, tags={RANGE_START_TAG: "p1", RANGE_END_TAG: "p3"}, raise_on_error=True
    )
    return result.run_id


def event_tags(instance: DagsterInstance, keys: Sequence[AssetKey]) -> dict[str, list[list[tuple[str, str]]]]:
    """Each asset's indexed event tags, as comparable values (an event's tags sorted, the events sorted)."""
    return {
        key.to_user_string(): sorted(sorted(tags.items()) for tags in instance.get_event_tags_for_asset(key))
        for key in keys
    }


@pytest.fixture(autouse=True)
def batch_size_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening a storage sets DAGSTER_EVENT_BATCH_SIZE for the process; each test gets the suite's back."""
    monkeypatch.delenv(BATCH_SIZE_VAR, raising=False)


def publish(inbox: Path) -> None:
    for name in NAMES:
        clips = make_clips(2, source_video=f"/videos/{name}")
        if name == BAD:
            clips[1].span_end = clips[1].span_start  # span_end must come after span_start
        write_video(inbox / f"{name}.parquet", clips, source_video=f"/videos/{name}")


def run_range(instance: DagsterInstance, inbox: Path, output: Path) -> str:
    """One batched run of NAMES (BAD fails its partition, the others are written); returns its run id."""
    instance.add_dynamic_partitions(PARTITIONS_NAME, NAMES)
    result = materialize(
        [processed_videos, *FAMILY_ASSETS],
        instance=instance,
        resources=build_resources(str(inbox), str(output), WriterSettingsResource(input_path="/videos")),
        tags={RANGE_START_TAG: NAMES[0], RANGE_END_TAG: NAMES[-1]},
        raise_on_error=False,
    )
    assert not result.success  # BAD's partition failed the step
    return result.run_id


def recorded(instance: DagsterInstance, run_id: str) -> dict[str, Any]:
    """What the UI and the public API read back about a run's assets, with the run id left out."""
    partitions_def = video_partitions(PARTITIONS_NAME)
    found: dict[str, Any] = {}
    for key in FAMILY_KEYS:
        materializations = instance.fetch_materializations(key, limit=100).records
        planned = instance.fetch_planned_materializations(key, limit=100).records
        [asset_record] = instance.get_asset_records([key])
        last = asset_record.asset_entry.last_materialization_record
        assert last is not None and asset_record.asset_entry.last_run_id == run_id
        found[key.to_user_string()] = {
            "materialized": sorted(
                (
                    record.partition_key,
                    sorted((name, value.value) for name, value in record.asset_materialization.metadata.items()),
                )
                for record in materializations
                if record.asset_materialization is not None
            ),
            "planned": sorted(str(record.partition_key) for record in planned),
            "status": instance.get_status_by_partition(key, NAMES, partitions_def),
            "materialized_partitions": sorted(instance.get_materialized_partitions(key)),
            "last_materialized": (last.partition_key, last.storage_id in {r.storage_id for r in materializations}),
            "tags": event_tags(instance, [key])[key.to_user_string()],
        }
    return found


def test_a_batched_run_records_what_the_default_storage_records(
    tmp_path: Path, inbox: Path, output: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(inbox)
    monkeypatch.setenv(BATCH_SIZE_VAR, str(DEFAULT_EVENT_BATCH_SIZE))
    versioned_keys = [AssetKey("versioned")]
    with instance_for_test() as default:
        default_run = run_range(default, inbox, output)
        expected = recorded(default, default_run)
        run_versioned(default)
        expected_tags = event_tags(default, versioned_keys)
    shutil.rmtree(output)  # the same writes again, not an unchanged re-run
    with use_embedded_instance(tmp_path / "embedded") as embedded:
        assert isinstance(embedded.event_log_storage, BatchedSqliteEventLogStorage)
        embedded_run = run_range(embedded, inbox, output)
        assert recorded(embedded, embedded_run) == expected
        run_versioned(embedded)
        assert event_tags(embedded, versioned_keys) == expected_tags
    assert expected_tags == {"versioned": [[("dagster/data_version", "v1")]] * 3}
    statuses = expected["clip_files"]["status"]
    assert statuses == {
        "a.mp4": AssetPartitionStatus.MATERIALIZED,
        BAD: AssetPartitionStatus.FAILED,
        "c.mp4": AssetPartitionStatus.MATERIALIZED,
    }
    assert expected["clip_files"]["planned"] == NAMES  # one planned event per partition


def table_rows(storage: AssetEventBatches) -> dict[str, list[dict[str, Any]]]:
    """Every row of INDEX_TABLES but the wall-clock time the database stamped it with on insert.

    An asset's row is left without its surrogate `id` too: PostgreSQL's sequence advances on every
    upsert that conflicts, so it counts the statements, and nothing reads it (rows are found by key).
    """
    with storage.index_connection() as conn:
        return {
            table: [
                {
                    name: value
                    for name, value in row._mapping.items()
                    if name != "create_timestamp" and not (table == "asset_keys" and name == "id")
                }
                for row in conn.execute(db.text(f"SELECT * FROM {table} ORDER BY {order}"))
            ]
            for table, order in INDEX_TABLES.items()
        }


def batches(events: Sequence[EventLogEntry]) -> Iterator[list[EventLogEntry]]:
    """Consecutive runs of batch-writable asset events, as Dagster forms them, and the rest one by one."""
    batchable = {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
        DagsterEventType.ASSET_FAILED_TO_MATERIALIZE,
    }
    batch: list[EventLogEntry] = []
    for event in events:
        if event.dagster_event_type in batchable:
            batch.append(event)
            continue
        if batch:
            yield batch
            batch = []
        yield [event]
    if batch:
        yield batch


def postgres_storage(database: Database) -> CachedPostgresEventLogStorage:
    return CachedPostgresEventLogStorage(database.url)


@contextmanager
def two_empty_storages(kind: str, tmp_path: Path) -> Iterator[tuple[AssetEventBatches, AssetEventBatches]]:
    """Two empty event logs of one kind: one written event by event, one in Dagster's batches."""
    if kind == "sqlite":
        yield (
            BatchedSqliteEventLogStorage(str(tmp_path / "one_by_one")),
            BatchedSqliteEventLogStorage(str(tmp_path / "batched")),
        )
        return
    with fresh_database("clip_assets_one_by_one") as first, fresh_database("clip_assets_batched") as second:
        one_by_one, batched = postgres_storage(first), postgres_storage(second)
        try:
            yield one_by_one, batched
        finally:
            one_by_one.dispose()
            batched.dispose()


@contextmanager
def engine_events(engine: db.Engine, event: str, keep: Callable[..., object | None]) -> Iterator[list[object]]:
    """What `keep` makes of each `event` the engine fires while the block runs (None: not kept)."""
    kept: list[object] = []

    def record(*args: Any) -> None:
        value = keep(*args)
        if value is not None:
            kept.append(value)

    db.event.listen(engine, event, record)
    try:
        yield kept
    finally:
        db.event.remove(engine, event, record)


def counted_connections(engine: db.Engine) -> AbstractContextManager[list[object]]:
    """Every database connection `engine` opens while the block runs."""
    return engine_events(engine, "connect", lambda dbapi_connection, connection_record: dbapi_connection)


def counted_queries(engine: db.Engine) -> AbstractContextManager[list[object]]:
    """Every SELECT on the dynamic partitions table that `engine` sends while the block runs."""

    def partition_select(conn: Any, cursor: Any, statement: str, *args: Any) -> str | None:
        return (
            statement if "dynamic_partitions" in statement and statement.lstrip().upper().startswith("SELECT") else None
        )

    return engine_events(engine, "before_cursor_execute", partition_select)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_store_event_batch_writes_the_rows_store_event_writes(
    kind: str, tmp_path: Path, inbox: Path, output: Path
) -> None:
    publish(inbox)
    with instance_for_test() as source:
        run_ids = [run_range(source, inbox, output), run_versioned(source)]
        events = [
            record.event_log_entry
            for run_id in run_ids
            for record in source.get_records_for_run(run_id, limit=10_000).records
        ]
    with two_empty_storages(kind, tmp_path) as (one_by_one, batched):
        for event in events:
            one_by_one.store_event(event)
        sizes, connections = [], []
        for batch in batches(events):
            if len(batch) == 1:
                batched.store_event(batch[0])
                continue
            with counted_connections(batched._engine) as opened:
                batched.store_event_batch(batch)
            sizes.append(len(batch))
            connections.append(len(opened))
        assert max(sizes) >= 2 * len(FAMILY_KEYS)  # planned events of several assets, several partitions each
        # One transaction per batch whatever its size, and the first batch's one schema check
        # (dagster-postgres stored a planned batch event by event, two connections each).
        assert connections[0] <= 2 and max(connections[1:]) <= 1, connections
        expected = table_rows(one_by_one)
        assert len(expected["asset_keys"]) >= len(FAMILY_KEYS) and expected["event_logs"]
        assert [(row["key"], row["value"]) for row in expected["asset_event_tags"]] == [
            ("dagster/data_version", "v1")
        ] * 3
        assert table_rows(batched) == expected


def test_the_embedded_instance_is_the_batched_storage_and_turns_batching_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = embedded_instance_config(tmp_path)
    assert config["event_log_storage"]["class"] == BatchedSqliteEventLogStorage.__name__
    with use_embedded_instance(tmp_path) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, BatchedSqliteEventLogStorage)
        assert Path(storage.get_db_path()).is_file()
        assert os.environ[BATCH_SIZE_VAR] == str(DEFAULT_EVENT_BATCH_SIZE)
        assert os.environ["DAGSTER_HOME"] == str(tmp_path)
    monkeypatch.setenv(BATCH_SIZE_VAR, "7")  # an operator's choice wins
    with use_embedded_instance(tmp_path):
        assert os.environ[BATCH_SIZE_VAR] == "7"


def check_recent_partitions(
    storage: RecentDynamicPartitions, other: RecentDynamicPartitions, engine: db.Engine
) -> None:
    """Cached reads query nothing; this storage's own changes show at once, another's within the window.

    The counts are taken with a window far longer than the test (a slow machine cannot close it between
    two reads and add a query); then a short one, to see another process's change once it has passed."""
    storage.cache_seconds = 3600.0
    storage.add_dynamic_partitions("videos", ["a", "b"])
    with counted_queries(engine) as queries:
        assert storage.has_dynamic_partition("videos", "a")  # asked of the database, then remembered
        assert storage.has_dynamic_partition("videos", "a")
        assert not storage.has_dynamic_partition("videos", "x")
        assert not storage.has_dynamic_partition("videos", "x")  # an absent key is asked every time
    assert len(queries) == 3
    with counted_queries(engine) as queries:
        assert storage.get_dynamic_partitions("videos") == ["a", "b"]
        first = storage.get_dynamic_partitions("videos")
        first.append("changed by a caller")
        assert storage.get_dynamic_partitions("videos") == ["a", "b"]
        assert storage.has_dynamic_partition("videos", "b") and not storage.has_dynamic_partition("videos", "x")
    assert len(queries) == 1
    storage.add_dynamic_partitions("videos", ["c"])
    assert storage.get_dynamic_partitions("videos") == ["a", "b", "c"]
    storage.delete_dynamic_partition("videos", "a")
    assert not storage.has_dynamic_partition("videos", "a")
    assert storage.get_dynamic_partitions("videos") == ["b", "c"]
    assert storage.get_dynamic_partitions("other") == []
    other.add_dynamic_partitions("videos", ["d"])  # another process's storage
    other.delete_dynamic_partition("videos", "b")
    assert storage.get_dynamic_partitions("videos") == ["b", "c"]  # within the window: what it read
    storage.cache_seconds = PARTITIONS_CACHE_SECONDS
    time.sleep(PARTITIONS_CACHE_SECONDS)
    assert storage.get_dynamic_partitions("videos") == ["c", "d"]
    assert storage.has_dynamic_partition("videos", "d") and not storage.has_dynamic_partition("videos", "b")


def test_recent_partitions_on_sqlite(tmp_path: Path) -> None:
    storage = BatchedSqliteEventLogStorage(str(tmp_path))
    other = BatchedSqliteEventLogStorage(str(tmp_path))
    check_recent_partitions(storage, other, storage._engine)


def test_recent_partitions_on_postgres(tmp_path: Path) -> None:
    with fresh_database("clip_assets_instance") as database:
        postgres_db = {
            "username": database.user,
            "password": "",
            "hostname": database.host,
            "db_name": database.name,
            "port": database.port,
            "scheme": "postgresql+psycopg2",
        }
        storage_config = {"postgres_db": postgres_db}
        (tmp_path / "dagster.yaml").write_text(
            yaml.safe_dump(
                {
                    "event_log_storage": {
                        "module": "clip_assets.instance",
                        "class": CachedPostgresEventLogStorage.__name__,
                        "config": storage_config,
                    }
                }
            )
        )
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            storage = instance.event_log_storage
            assert isinstance(storage, CachedPostgresEventLogStorage)
            other = CachedPostgresEventLogStorage.from_config_value(None, storage_config)
            try:
                check_recent_partitions(storage, other, storage._engine)
            finally:
                other.dispose()


def materialization(partition: str) -> EventLogEntry:
    """The event a run logs when it materializes one partition of clip_files."""
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="clip_assets_job",
        event_specific_data=StepMaterializationData(AssetMaterialization(FAMILY_KEYS[0], partition=partition)),
        step_key="write_clip_outputs",
    )
    return EventLogEntry(
        error_info=None,
        level=logging.INFO,
        user_message="",
        run_id="0" * 36,
        timestamp=time.time(),
        dagster_event=event,
    )


def backend_pid(storage: CachedPostgresEventLogStorage) -> int:
    """The server process of the connection the storage's next statement would use."""
    with storage.index_connection() as conn:
        return int(conn.execute(db.text("SELECT pg_backend_pid()")).scalar_one())


def test_the_postgres_event_log_keeps_its_connection_reconnects_and_never_shares_it_with_a_fork() -> None:
    with fresh_database("clip_assets_pool") as database:
        storage = postgres_storage(database)
        try:
            storage.store_event(materialization("v0"))  # its schema check opens a second connection, once
            with counted_connections(storage._engine) as opened:
                for index in range(1, 20):
                    storage.store_event(materialization(f"v{index}"))
            assert opened == []  # dagster-postgres: two new connections per event
            parent = backend_pid(storage)
            assert backend_pid(storage) == parent

            database.end_connections()  # the server restarted or failed over
            storage.store_event(materialization("after the restart"))
            assert backend_pid(storage) != parent
            parent = backend_pid(storage)

            read, write = os.pipe()
            child = os.fork()
            if child == 0:  # the child reports its connection's server process, then leaves at once
                try:
                    storage.store_event(materialization("from a fork"))
                    os.write(write, str(backend_pid(storage)).encode())
                finally:
                    os._exit(0)
            os.close(write)
            with os.fdopen(read) as reply:
                childs = int(reply.read())
            assert os.waitpid(child, 0)[1] == 0
            assert childs != parent and backend_pid(storage) == parent  # the parent's connection still works

            partitions = storage.get_materialized_partitions(FAMILY_KEYS[0])
            assert partitions == {f"v{index}" for index in range(20)} | {"after the restart", "from a fork"}
        finally:
            storage.dispose()
