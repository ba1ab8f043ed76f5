"""The production instance for a benchmark: deploy/dagster.yaml on a throwaway PostgreSQL database, and the
code server, daemon and webserver the deployment test starts (clip_assets_tests.support.deployment).

Both the production-path and the partitions benchmarks measure what a deployment built from `deploy/`
does, so they take the shipped instance file as it is; an override is a path into its own structure
(`with_overrides` refuses a path the file does not have) and each benchmark says why it needs one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance

from clip_assets_tests.support.deployment import (
    LOCAL_INSTANCE,
    LOCATION_NAME,
    Database,
    Deployment,
    fresh_database,
    load_yaml,
    running_deployment,
    with_overrides,
)
from clip_assets_tests.support.graphql import REPOSITORY_NAME, DagsterGraphQL, GraphQLError, stop_all_sensors

DATABASE_PREFIX = "clip_assets_bench"


def write_home(home: Path, overrides: Mapping[tuple[str, ...], object] | None = None) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is deploy/dagster.yaml, with `overrides` at paths it already has."""
    home.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = load_yaml(LOCAL_INSTANCE)
    (home / "dagster.yaml").write_text(yaml.safe_dump(with_overrides(config, overrides or {})))
    return home


@contextmanager
def production_database() -> Iterator[Database]:
    """A fresh database on the machine's PostgreSQL, its connection variables set in this process too.

    The shipped dagster.yaml reads its connection from the environment, for the servers (given it
    explicitly) and for this process's own `DagsterInstance` (which reads os.environ): both are set,
    and restored on the way out.
    """
    with fresh_database(DATABASE_PREFIX) as database:
        saved = {name: os.environ.get(name) for name in database.env}
        os.environ.update(database.env)
        try:
            yield database
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextmanager
def production_instance(home: Path) -> Iterator[DagsterInstance]:
    """This process's view of the instance at `home` (PostgreSQL run, event and schedule storage)."""
    with DagsterInstance.from_config(str(home)) as instance:
        storage = type(instance.run_storage).__name__
        if storage != "PostgresRunStorage":
            raise RuntimeError(f"{home / 'dagster.yaml'}: run storage is {storage}, not PostgreSQL")
        yield instance


@contextmanager
def quiet_deployment(home: Path, database: Database, env: Mapping[str, str], logs: Path) -> Iterator[Deployment]:
    """Code server, daemon and webserver on `home`, every sensor stopped before the caller goes on.

    The benchmarks launch the runs they time themselves; a sensor's own runs (the inbox sensor's, the
    summary's automation) would compete for the same two cores. The inbox the servers are given must be
    empty until the sensors are stopped, so a tick before that finds nothing.
    """
    logs.mkdir(parents=True, exist_ok=True)
    with running_deployment(home, {**database.env, **env}, logs) as deployment:
        try:
            stop_all_sensors(deployment.graphql, LOCATION_NAME)
        except GraphQLError as error:
            raise RuntimeError(f"could not stop the sensors: {error}\n{deployment.logs()}") from None
        yield deployment


START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def start_sensor(graphql: DagsterGraphQL, name: str) -> None:
    """Start one sensor of the code location again, as the UI's toggle does."""
    selector = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "sensorName": name}
    result = graphql(START_SENSOR, {"selector": selector})["startSensor"]
    if result["__typename"] != "Sensor" or result["sensorState"]["status"] != "RUNNING":
        raise GraphQLError(f"could not start sensor {name}: {result}")
