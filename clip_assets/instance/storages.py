"""The Dagster instance's event storage: the records Dagster's own storages write, in fewer transactions.

A batched backfill run of 25 partitions and 5 families logs 125 planned events and 125
materializations. Dagster's default SQLite storage writes each in its own transactions (a run
shard and the index database, a new SQLAlchemy engine for each, a schema inspection per asset
event), which made the Dagster path slower than the work it records (docs/performance.md, "Levers
measured"). Here:

- `AssetEventBatches`: `store_event_batch` writing any batch of asset events (the planned events of
  a run, the materializations of one asset's partitions) in one transaction, with exactly the rows
  the one-by-one path writes. dagster-postgres batches only materializations: a run's planned
  events went one by one, two connections each, 2,500 of them for a run of 500 partitions;
- `BatchedSqliteEventLogStorage`, the embedded instance's event log: Dagster's
  `ConsolidatedSqliteEventLogStorage` (one database for all runs, so a batch is one transaction),
  one engine per storage, the schema checks cached once they succeed, and those batches;
- `CachedPostgresEventLogStorage`, the production instance's (deploy/dagster.yaml): dagster-postgres's
  event log with those batches;
- `RecentDynamicPartitions`, on both: the partition keys of a dynamic partitions definition, and the
  keys known to exist, re-used for `PARTITIONS_CACHE_SECONDS`. Dagster reads the whole list many times per run (every
  partitions check; at 100,000 keys each read is a query of 100,000 rows) and asks whether a key
  exists about twice per asset partition it records. Adding or deleting keys through the storage
  drops its copy; another process's changes show at most that long after the read before them.

Dagster calls `store_event_batch` only when `DAGSTER_EVENT_BATCH_SIZE` is above 0 in the process
that logs the events; opening either storage sets it to `DEFAULT_EVENT_BATCH_SIZE` unless it is set,
so every run of an instance configured with them (in process, or launched by the daemon) batches.
"""

from __future__ import annotations

import os
import time
import weakref
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as db
import yaml
from dagster import DagsterInstance, EventLogEntry
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS
from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage, SqlEventLogStorage
from dagster._core.storage.event_log.migration import ASSET_KEY_INDEX_COLS
from dagster._core.storage.event_log.schema import AssetEventTagsTable, AssetKeyTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log import SQLITE_EVENT_LOG_FILENAME
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from dagster._serdes import ConfigurableClassData
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import create_pg_engine, get_token_provider_from_config, pg_url_from_config
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import Executable

BATCH_SIZE_VAR = "DAGSTER_EVENT_BATCH_SIZE"
# Larger than any batch Dagster forms here (one run's planned events, one asset's partitions of a run),
# so each of those is one write.
DEFAULT_EVENT_BATCH_SIZE = 1000
PARTITIONS_CACHE_SECONDS = 1.0
# Connections CachedPostgresEventLogStorage keeps per process, and how many more threads may open at
# once: a run writes from one thread at a time; the daemon's threads (sensors, queue, backfills) share it.
POOL_SIZE = 1
POOL_OVERFLOW = 4
POOL_RECYCLE_SECONDS = 3600
# Where the embedded instance keeps its event log, under $DAGSTER_HOME.
EVENT_LOG_DIR = ("history", "event_log")


def enable_event_batches() -> None:
    """Turn on Dagster's batched event writes in this process, unless the environment chose a size."""
    os.environ.setdefault(BATCH_SIZE_VAR, str(DEFAULT_EVENT_BATCH_SIZE))


class RecentDynamicPartitions(SqlEventLogStorage):
    """Dynamic partition keys re-used for `cache_seconds` after each read: the list, and keys known to exist.

    Dagster asks `has_dynamic_partition` about every asset partition a run records (about two
    queries per family and partition) and reads the whole list on every partitions check. Keys added
    or deleted through this storage drop what it remembers of that definition at once, so this
    process always reads its own writes; each caller gets its own list, so none can change what the
    next one reads.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # How long a read is re-used: a window of this storage's own (tests count queries with a long one, so
        # a slow machine cannot close it mid-count, and see another process's change with a short one).
        self.cache_seconds = PARTITIONS_CACHE_SECONDS
        self._recent_lists: dict[str, tuple[float, tuple[str, ...], frozenset[str]]] = {}
        self._recent_members: dict[tuple[str, str], float] = {}
        enable_event_batches()
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # ConsolidatedSqlite's is untyped

    def _recent_list(self, partitions_def_name: str) -> tuple[float, tuple[str, ...], frozenset[str]] | None:
        recent = self._recent_lists.get(partitions_def_name)
        return recent if recent is not None and time.monotonic() - recent[0] < self.cache_seconds else None

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]:
        recent = self._recent_list(partitions_def_name)
        if recent is None:
            keys = tuple(super().get_dynamic_partitions(partitions_def_name))
            # Counted from the end of the read: at 100,000 keys the read itself takes about a second,
            # and a window counted from its start would have closed by the time it is filled.
            recent = (time.monotonic(), keys, frozenset(keys))
            self._recent_lists[partitions_def_name] = recent
        return list(recent[1])

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        recent = self._recent_list(partitions_def_name)
        if recent is not None:
            return partition_key in recent[2]
        seen = self._recent_members.get((partitions_def_name, partition_key))
        if seen is not None and time.monotonic() - seen < self.cache_seconds:
            return True
        exists = super().has_dynamic_partition(partitions_def_name, partition_key)
        if exists:  # an absent key is asked again: it may be added any moment, and then it must show
            self._recent_members[(partitions_def_name, partition_key)] = time.monotonic()
        return exists

    def _forget(self, partitions_def_name: str) -> None:
        self._recent_lists.pop(partitions_def_name, None)
        for member in [member for member in self._recent_members if member[0] == partitions_def_name]:
            del self._recent_members[member]

    def add_dynamic_partitions(self, partitions_def_name: str, partition_keys: Sequence[str]) -> None:
        self._forget(partitions_def_name)
        super().add_dynamic_partitions(partitions_def_name, partition_keys)
        self._forget(partitions_def_name)

    def delete_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> None:
        self._forget(partitions_def_name)
        super().delete_dynamic_partition(partitions_def_name, partition_key)
        self._forget(partitions_def_name)

    def wipe(self) -> None:
        self._recent_lists.clear()
        self._recent_members.clear()
        super().wipe()


class AssetEventBatches(SqlEventLogStorage):
    """`store_event_batch` for any batch of asset events: one transaction with the rows `store_event` writes.

    Dagster forms batches of a run's planned events (create_run: 5 per partition of a batched run)
    and of one asset's materializations. dagster-postgres batches only materializations and
    observations and stores every other batch one event at a time, two connections each, which is
    what made a daemon-created run of 500 partitions take minutes before it was queued
    (docs/performance.md). Here the event rows, the indexed tags (asset_event_tags) and each asset's
    asset_keys row are written as `store_event` would one event after another: an asset's row ends
    with the values of its events applied in order, each column from the last event that sets it.
    The subclasses say how their dialect upserts that row.
    """

    def _asset_key_index_cols(self, conn: Connection) -> bool:
        """Whether asset_keys has the index columns, as this storage's own `_store_asset_event` decides it."""
        return self._has_asset_key_index_cols_on_connection(conn)

    @abstractmethod
    def _asset_row_statement(self, asset_key: str, values: dict[str, Any]) -> Executable | None:
        """The statement `_store_asset_event` runs for an asset whose events set `values` (None: nothing)."""

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        if not events:
            return
        asset_events: list[tuple[EventLogEntry, int]] = []
        check_events: list[tuple[EventLogEntry, int]] = []
        with self.index_transaction() as conn:
            rows = [self._event_to_row(event) for event in events]
            statement = SqlEventLogStorageTable.insert().returning(
                SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
            )
            event_ids = [int(row[0]) for row in conn.execute(statement, rows)]
            for event, event_id in zip(events, event_ids, strict=True):
                dagster_event = event.dagster_event
                if dagster_event is None:
                    continue
                if dagster_event.event_type in ASSET_EVENTS and dagster_event.asset_key:
                    asset_events.append((event, event_id))
                if dagster_event.event_type in ASSET_CHECK_EVENTS:
                    check_events.append((event, event_id))
            if asset_events:
                self._store_asset_event_tags(
                    conn, [event for event, _ in asset_events], [event_id for _, event_id in asset_events]
                )
                self._store_asset_rows(conn, asset_events)
        # As store_event does: the check's own table, after the event is in the log.
        for event, event_id in check_events:
            self.store_asset_check_event(event, event_id)

    def _store_asset_rows(self, conn: Connection, asset_events: Sequence[tuple[EventLogEntry, int]]) -> None:
        """Each asset's asset_keys row, one statement per asset for the whole batch."""
        has_index_cols = self._asset_key_index_cols(conn)
        by_asset: dict[str, dict[str, Any]] = {}
        for event, event_id in asset_events:
            values = self._get_asset_entry_values(event, event_id, has_index_cols)
            asset_key = event.get_dagster_event().asset_key
            if asset_key is not None:
                by_asset.setdefault(asset_key.to_string(), {}).update(values)
        for key, values in by_asset.items():
            statement = self._asset_row_statement(key, values)
            if statement is not None:
                conn.execute(statement)


class BatchedSqliteEventLogStorage(RecentDynamicPartitions, AssetEventBatches, ConsolidatedSqliteEventLogStorage):
    """One SQLite database for every run's events, so a batch of asset events is one transaction."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # Set before the parent's constructor: it creates and indexes the database through _connect.
        self._tables: set[str] = set()
        self._asset_key_columns: set[str] = set()
        self._database_url = create_db_conn_string(base_dir, SQLITE_EVENT_LOG_FILENAME)
        super().__init__(base_dir, inst_data=inst_data)
        # Asked when a batch first has indexed tags: asked here, that batch is one connection like the others.
        self.has_table(AssetEventTagsTable.name)

    @cached_property
    def _engine(self) -> Engine:
        # NullPool as the parent's: a connection per use, nothing shared across threads or a fork.
        return create_engine(
            self._database_url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        )

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def has_table(self, table_name: str) -> bool:
        # Only a present table is remembered: a migration adds tables, nothing here drops one.
        if table_name not in self._tables:
            with self._engine.connect() as conn:
                if self._engine.dialect.has_table(conn, table_name):
                    self._tables.add(table_name)
        return table_name in self._tables

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        if column_name not in self._asset_key_columns:
            self._asset_key_columns.update(
                str(column["name"]) for column in db.inspect(conn).get_columns(AssetKeyTable.name)
            )
        return column_name in self._asset_key_columns

    def upgrade(self) -> None:
        super().upgrade()  # type: ignore[no-untyped-call]  # untyped in Dagster
        self._tables.clear()
        self._asset_key_columns.clear()

    def _asset_row_statement(self, asset_key: str, values: dict[str, Any]) -> Executable | None:
        # SqlEventLogStorage._store_asset_event: nothing without values, else insert or update.
        if not values:
            return None
        statement = sqlite_insert(AssetKeyTable).values(asset_key=asset_key, **values)
        return statement.on_conflict_do_update(index_elements=[AssetKeyTable.c.asset_key], set_=values)


class CachedPostgresEventLogStorage(RecentDynamicPartitions, AssetEventBatches, PostgresEventLogStorage):
    """dagster-postgres's event log with recent partition keys, asset-event batches and a connection kept open.

    A batch skips the per-event `NOTIFY` of dagster-postgres's `store_event`, as its own batches of
    materializations do: Dagster's event watchers poll, the notification is kept only for old clients.

    dagster-postgres opens a new connection for every statement (NullPool, so no instance holds
    connections); each materialization outside a batch takes two: 11.6-12.4 ms an event on the
    machine's PostgreSQL against 4.4-4.9 ms on a kept one (docs/performance.md). A run worker or a
    daemon is one instance for its whole life, so this keeps POOL_SIZE connections open, lets at most
    POOL_OVERFLOW more exist while threads write at once, checks each before use (a restarted server
    costs a reconnect, not an error) and gives a forked child its own.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        connect_once = self._engine
        self._engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
            pool_pre_ping=True,
            pool_recycle=POOL_RECYCLE_SECONDS,
        )
        connect_once.dispose()
        engine = weakref.ref(self._engine)
        os.register_at_fork(after_in_child=lambda: _forget_parents_connections(engine))

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        # The webserver's own engine (one pooled connection with a statement timeout) replaces this one.
        kept = self._engine
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)
        kept.dispose()

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> CachedPostgresEventLogStorage:
        # The parent builds a PostgresEventLogStorage by name; this builds this class from the same config.
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def _asset_key_index_cols(self, conn: Connection) -> bool:
        return self.has_secondary_index(ASSET_KEY_INDEX_COLS)

    def _asset_row_statement(self, asset_key: str, values: dict[str, Any]) -> Executable | None:
        # PostgresEventLogStorage._store_asset_event: the row is created even without values.
        statement = postgresql.insert(AssetKeyTable).values(asset_key=asset_key, **values)
        if not values:
            return statement.on_conflict_do_nothing()
        return statement.on_conflict_do_update(index_elements=[AssetKeyTable.c.asset_key], set_=values)


def _forget_parents_connections(engine: weakref.ref[Engine]) -> None:
    """In a forked child: never use (or close) the parent's pooled connections, open new ones."""
    alive = engine()
    if alive is not None:
        alive.dispose(close=False)


def embedded_instance_config(home: Path) -> dict[str, Any]:
    """The embedded instance's dagster.yaml: Dagster's SQLite defaults but for the batched event log."""
    return {
        "event_log_storage": {
            "module": __name__,
            "class": BatchedSqliteEventLogStorage.__name__,
            "config": {"base_dir": str(home.joinpath(*EVENT_LOG_DIR))},
        },
    }


@contextmanager
def use_embedded_instance(home: Path) -> Iterator[DagsterInstance]:
    """The embedded instance at `home` (its dagster.yaml written when missing), as $DAGSTER_HOME for the block."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(embedded_instance_config(home), sort_keys=False))
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.get() as instance:
            yield instance
    finally:
        if previous is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = previous
