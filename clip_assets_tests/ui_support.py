"""Helpers for the browser test: server processes with logs, a small GraphQL client, bounded waits.

Everything here talks to a real `dagster-webserver` and `dagster-daemon` over loopback; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Definitions(...) without a repository name gets this one.
REPOSITORY_NAME = "__repository__"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Polls `check` until it returns something other than None/False, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except retry_on as error:
            value, last = None, error
        else:
            if value is not None and value is not False:
                return value
            last = value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {last!r})")
        time.sleep(interval)


@dataclass
class ServerProcess:
    """A server started in its own process group, so stopping it also stops the processes it spawned
    (code servers, run workers); its stdout and stderr go to one log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, args: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_dir: Path
    ) -> ServerProcess:
        log_path = log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                list(args),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name, popen, log_path)

    def ensure_running(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 8000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return text if len(text) <= chars else "...\n" + text[-chars:]

    def terminate(self) -> None:
        """SIGTERM to the whole group (start_new_session: the group's id is the leader's pid)."""
        self._signal_group(self.popen.pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 20.0) -> None:
        """Waits for the group to end after `terminate`; SIGKILL to whatever is left after `timeout`."""
        group = self.popen.pid
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(group, signal.SIGKILL)
            self.popen.wait(timeout)
        # Children that outlived the leader (a code server, a run worker) share its group.
        deadline = time.monotonic() + timeout
        while self._group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._group_alive(group):
            self._signal_group(group, signal.SIGKILL)

    @staticmethod
    def _signal_group(group: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)

    @staticmethod
    def _group_alive(group: int) -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True


class GraphQLError(RuntimeError):
    pass


@dataclass
class DagsterGraphQL:
    """POSTs queries to the webserver's /graphql endpoint; raises on transport or GraphQL errors."""

    base_url: str
    timeout: float = 30.0
    calls: list[str] = field(default_factory=list)

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            document: dict[str, Any] = json.load(response)
        if document.get("errors"):
            raise GraphQLError(json.dumps(document["errors"], indent=1)[:4000])
        data: dict[str, Any] = document["data"]
        return data


WORKSPACE_QUERY = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name } }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""


def loaded_code_location(graphql: DagsterGraphQL, location: str) -> dict[str, Any] | None:
    """The location's entry once it is loaded; raises if it failed to load."""
    workspace = graphql(WORKSPACE_QUERY)["workspaceOrError"]
    if workspace["__typename"] != "Workspace":
        raise GraphQLError(str(workspace))
    for entry in workspace["locationEntries"]:
        if entry["name"] != location or entry["loadStatus"] != "LOADED":
            continue
        loaded = entry["locationOrLoadError"]
        if loaded is None:
            return None
        if loaded["__typename"] == "PythonError":
            raise GraphQLError(f"code location {location} failed to load: {loaded['message']}\n{loaded['stack']}")
        return dict(entry)
    return None


SENSORS_QUERY = """
query Sensors($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    __typename
    ... on Sensors { results { id name sensorState { status } } }
    ... on PythonError { message }
  }
}
"""

STOP_SENSOR = """
mutation StopSensor($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { name status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def stop_all_sensors(graphql: DagsterGraphQL, location: str) -> list[str]:
    """Stops every sensor of the location (they run by default); returns their names."""
    selector = {"repositoryLocationName": location, "repositoryName": REPOSITORY_NAME}
    sensors = graphql(SENSORS_QUERY, {"selector": selector})["sensorsOrError"]
    if sensors["__typename"] != "Sensors":
        raise GraphQLError(str(sensors))
    stopped = []
    for sensor in sensors["results"]:
        result = graphql(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
        state = result.get("instigationState") or {}
        if state.get("status") != "STOPPED":
            raise GraphQLError(f"could not stop sensor {sensor['name']}: {result}")
        stopped.append(sensor["name"])
    return stopped


LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { stack }
  }
}
"""


def launch_asset_backfill(graphql: DagsterGraphQL, assets: Sequence[str], partitions: Sequence[str], title: str) -> str:
    """An asset backfill of `partitions` of `assets`, as the UI's Materialize dialog launches one."""
    params = {
        "assetSelection": [{"path": [name]} for name in assets],
        "partitionNames": list(partitions),
        "title": title,
    }
    result = graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(f"backfill not launched: {json.dumps(result, indent=1)}")
    backfill_id: str = result["backfillId"]
    return backfill_id


BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numPartitions
      partitionNames
      error { message stack }
      runs { runId status tags { key value } }
    }
    ... on Error { message }
  }
}
"""

BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def backfill_state(graphql: DagsterGraphQL, backfill_id: str) -> dict[str, Any]:
    backfill = graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
    if backfill["__typename"] != "PartitionBackfill":
        raise GraphQLError(str(backfill))
    return dict(backfill)


PARTITION_STATS_QUERY = """
query Stats($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    groupName
    partitionStats { numMaterialized numPartitions numFailed numMaterializing }
  }
}
"""


def partition_stats(graphql: DagsterGraphQL, assets: Sequence[str]) -> dict[str, dict[str, int]]:
    nodes = graphql(PARTITION_STATS_QUERY, {"keys": [{"path": [name]} for name in assets]})["assetNodes"]
    return {"/".join(node["assetKey"]["path"]): node["partitionStats"] for node in nodes}


MATERIALIZATIONS_QUERY = """
query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition
        runId
        metadataEntries {
          __typename
          label
          ... on TextMetadataEntry { text }
          ... on IntMetadataEntry { intValue }
          ... on BoolMetadataEntry { boolValue }
          ... on PathMetadataEntry { path }
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""


def latest_materialization_metadata(graphql: DagsterGraphQL, asset: str, partition: str) -> dict[str, Any] | None:
    """label -> value of the partition's newest materialization (None if it has none)."""
    found = graphql(MATERIALIZATIONS_QUERY, {"key": {"path": [asset]}, "partitions": [partition]})["assetOrError"]
    if found["__typename"] != "Asset" or not found["assetMaterializations"]:
        return None
    newest = found["assetMaterializations"][0]
    values: dict[str, Any] = {}
    for entry in newest["metadataEntries"]:
        value_keys = [key for key in entry if key not in ("__typename", "label")]
        values[entry["label"]] = entry[value_keys[0]] if value_keys else entry["__typename"]
    return values


RUN_LOGS_QUERY = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { pipelineFailureError: error { message } }
      }
    }
  }
}
"""


def run_failures(graphql: DagsterGraphQL, run_id: str) -> list[str]:
    """The failure messages of a run (step failures and the run failure), for a test's report."""
    logs = graphql(RUN_LOGS_QUERY, {"runId": run_id})["logsForRun"]
    failures = []
    for event in logs.get("events", []):
        if event["__typename"] == "ExecutionStepFailureEvent":
            failures.append(f"step {event['stepKey']}: {(event.get('error') or {}).get('message', event['message'])}")
        elif event["__typename"] == "RunFailureEvent":
            failures.append(f"run: {event['message']} {(event.get('pipelineFailureError') or {}).get('message', '')}")
    return failures
