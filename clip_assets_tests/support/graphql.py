"""A small client of dagster-webserver's GraphQL API, and the queries the deployment and browser tests send.

Everything here talks to a real `dagster-webserver` over loopback; nothing is mocked.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Definitions(...) without a repository name gets this one.
REPOSITORY_NAME = "__repository__"
# The sensor daemon starts a tick at most every 5 s; twice that without a new tick means none is coming.
SENSORS_QUIET_S = 10.0
SENSORS_SETTLE_TIMEOUT_S = 120.0


class GraphQLError(RuntimeError):
    pass


@dataclass
class DagsterGraphQL:
    """POSTs queries to the webserver's /graphql endpoint; raises on transport or GraphQL errors."""

    base_url: str
    timeout_s: float = 30.0

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            document: dict[str, Any] = json.load(response)
        if "errors" in document:
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
    """The location's entry once it is loaded as a repository location; raises if it failed to load."""
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
        return dict(entry) if loaded["__typename"] == "RepositoryLocation" else None
    return None


SENSORS_QUERY = """
query Sensors($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    __typename
    ... on Sensors { results { id name sensorState { status ticks(limit: 1) { id status } } } }
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
    """Stops every sensor of the location (they run by default) and returns their names once no tick of
    theirs can still request a run.

    Stopping does not end a tick already under way: the daemon reads which sensors run, then evaluates
    each, and a tick begun before the stop still submits its runs. So this waits until no tick is in
    progress and none has begun for longer than the daemon's loop (5 s) takes to start one."""
    selector = {"repositoryLocationName": location, "repositoryName": REPOSITORY_NAME}

    def sensors() -> list[dict[str, Any]]:
        found = graphql(SENSORS_QUERY, {"selector": selector})["sensorsOrError"]
        if found["__typename"] != "Sensors":
            raise GraphQLError(str(found))
        results: list[dict[str, Any]] = found["results"]
        return results

    stopped = []
    for sensor in sensors():
        result = graphql(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
        state = result.get("instigationState") or {}
        if state.get("status") != "STOPPED":
            raise GraphQLError(f"could not stop sensor {sensor['name']}: {result}")
        stopped.append(sensor["name"])

    def last_ticks() -> list[tuple[str, str]]:
        return [(tick["id"], tick["status"]) for sensor in sensors() for tick in sensor["sensorState"]["ticks"]]

    deadline = time.monotonic() + SENSORS_SETTLE_TIMEOUT_S
    seen, quiet_since = last_ticks(), time.monotonic()
    while time.monotonic() - quiet_since < SENSORS_QUIET_S:
        if time.monotonic() > deadline:
            raise GraphQLError(f"sensors {stopped} still ticking {SENSORS_SETTLE_TIMEOUT_S} s after they were stopped")
        time.sleep(0.5)
        now = last_ticks()
        if now != seen or any(status == "STARTED" for _, status in now):
            seen, quiet_since = now, time.monotonic()
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


def launch_asset_backfill(
    graphql: DagsterGraphQL, assets: Sequence[str], partitions: Sequence[str] | None, title: str
) -> str:
    """A backfill of `partitions` of `assets` (None: all of them), as the UI's Materialize dialog launches one."""
    selection = {"partitionNames": list(partitions)} if partitions is not None else {"allPartitions": True}
    params = {"assetSelection": [{"path": [name]} for name in assets], **selection, "title": title}
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

CANCEL_BACKFILL = """
mutation Cancel($id: String!) {
  cancelPartitionBackfill(backfillId: $id) {
    __typename
    ... on Error { message }
    ... on PythonError { stack }
  }
}
"""


def cancel_backfill(graphql: DagsterGraphQL, backfill_id: str) -> None:
    """Cancel a backfill as the UI's Cancel button does: the daemon submits no more of its runs."""
    result = graphql(CANCEL_BACKFILL, {"id": backfill_id})["cancelPartitionBackfill"]
    if result["__typename"] != "CancelBackfillSuccess":
        raise GraphQLError(f"backfill {backfill_id} not canceled: {json.dumps(result, indent=1)}")


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
