"""What test_deployment needs: the shipped instance files, a throwaway PostgreSQL database, and the code
server, daemon and webserver of a deployment as real processes, with their logs at hand."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clip_assets.components.partitions import RANGE_END_TAG, RANGE_START_TAG
from clip_assets_tests.support.graphql import DagsterGraphQL, loaded_code_location
from clip_assets_tests.support.processes import ServerGroup, free_port, script_path, wait_for

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
LOCAL_INSTANCE = DEPLOY / "dagster.yaml"
ECS_INSTANCE = DEPLOY / "ecs" / "dagster.yaml"
K8S_INSTANCE = DEPLOY / "k8s" / "dagster.yaml"
RAY_INSTANCE = DEPLOY / "ray" / "dagster.yaml"
INSTANCE_FILES = {"local": LOCAL_INSTANCE, "ecs": ECS_INSTANCE, "k8s": K8S_INSTANCE, "ray": RAY_INSTANCE}
WORKSPACE = DEPLOY / "workspace.yaml"
LOCATION_NAME = "clip_assets"
WRITE_POOL = "clip_assets_writes"

# The PostgreSQL server of the development machines and CI: loopback, trust authentication. Another
# port (a private cluster, when something else on the machine restarts the shared one) via the variable.
PG_PORT_VAR = "CLIP_ASSETS_PG_PORT"
PG_HOST = "127.0.0.1"
PG_PORT = int(os.environ.get(PG_PORT_VAR, "5432"))
PG_USER = "postgres"


# ---------------------------------------------------------------------------------------------------
# Instance files


def env_references(node: object) -> set[str]:
    """Every variable a Dagster config document reads with `{env: NAME}`."""
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            return {node["env"]}
        return set().union(*(env_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(value) for value in node))
    return set()


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def with_overrides(config: dict[str, Any], overrides: Mapping[tuple[str, ...], object]) -> dict[str, Any]:
    """A copy with values replaced at paths that must already exist: the shipped structure stays."""
    copy: dict[str, Any] = json.loads(json.dumps(config))
    for path, value in overrides.items():
        parent: Any = copy
        for part in path[:-1]:
            assert isinstance(parent, dict) and part in parent, f"the shipped file has no {'.'.join(path[:-1])}"
            parent = parent[part]
        assert isinstance(parent, dict) and path[-1] in parent, f"the shipped file has no {'.'.join(path)}"
        parent[path[-1]] = value
    return copy


# ---------------------------------------------------------------------------------------------------
# PostgreSQL


def postgres_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", PG_HOST, "-p", str(PG_PORT)], capture_output=True).returncode == 0


def _cluster(action: str) -> subprocess.CompletedProcess[str]:
    """`pg_ctlcluster <version> main <action>` on the machine's (newest) cluster."""
    versions = sorted(Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    assert versions, f"no PostgreSQL at {PG_HOST}:{PG_PORT} and no cluster in /etc/postgresql to {action}"
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", action],
        capture_output=True,
        text=True,
        timeout=120,
    )


def ensure_postgres() -> None:
    """Start the machine's cluster if it is down (as CI must); fail clearly when there is none."""
    if postgres_ready():
        return
    _cluster("start")
    wait_for(postgres_ready, 30, f"PostgreSQL at {PG_HOST}:{PG_PORT} to accept connections")


def restart_postgres() -> float:
    """Restart the machine's cluster, as a database failover looks to its clients; the seconds it took.

    Every connection of every client is cut, the test's own included. The cluster is shared by
    everything on the machine: restart it once, briefly. Whatever the restart does, the cluster is
    started again before this returns or raises.
    """
    started = time.monotonic()
    try:
        restarted = _cluster("restart")
        assert restarted.returncode == 0, f"pg_ctlcluster restart failed: {restarted.stderr.strip()}"
    finally:
        ensure_postgres()
    return time.monotonic() - started


@dataclass(frozen=True)
class Database:
    name: str
    host: str = PG_HOST
    port: int = PG_PORT
    user: str = PG_USER

    @property
    def env(self) -> dict[str, str]:
        """The variables the shipped instance files read their connection from."""
        return {
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_DB": self.name,
            "DAGSTER_PG_PORT": str(self.port),
        }

    @property
    def url(self) -> str:
        """The SQLAlchemy URL dagster-postgres's storages take, with the driver it ships."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.name}"

    def end_connections(self) -> None:
        """End every client's connection to this database, as a server restart or a failover would."""
        _admin_execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'"
            " AND pid <> pg_backend_pid()"
        )


def _admin_execute(statement: str) -> None:
    import psycopg2  # dagster-postgres's driver

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


@contextmanager
def fresh_database(prefix: str = "clip_assets_test") -> Iterator[Database]:
    """A new, empty database with a unique name, dropped afterwards (connections and all)."""
    ensure_postgres()
    database = Database(f"{prefix}_{uuid.uuid4().hex[:12]}")
    _admin_execute(f'CREATE DATABASE "{database.name}"')
    try:
        yield database
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------------
# A deployment


def clean_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any Dagster or clip-assets setting of its own, plus `overrides`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "CLIP_ASSETS_", "PYTEST_"))}
    return {**base, **overrides}


@dataclass
class Deployment(ServerGroup):
    """A code server, a daemon and a webserver, as `deploy/README.md` starts them."""

    home: Path
    webserver_port: int
    graphql: DagsterGraphQL


@contextmanager
def running_deployment(home: Path, env: Mapping[str, str], logs: Path) -> Iterator[Deployment]:
    """Code server, then daemon and webserver against deploy/workspace.yaml; all stopped on the way out."""
    code_port, web_port = free_port(), free_port()
    full_env = clean_environment(
        {
            **env,
            "DAGSTER_HOME": str(home),
            "CLIP_ASSETS_CODE_SERVER_HOST": "127.0.0.1",
            "CLIP_ASSETS_CODE_SERVER_PORT": str(code_port),
        }
    )
    graphql = DagsterGraphQL(f"http://127.0.0.1:{web_port}")
    # Started in the logs' folder, not the checkout: Dagster's commands apply a `.env` of their working
    # directory over their environment, and the demo leaves one in the checkout pointing at its own home.
    deployment = Deployment(full_env, logs, logs, home=home, webserver_port=web_port, graphql=graphql)
    try:
        deployment.start(
            "code-server",
            [
                *("dagster", "code-server", "start", "-h", "127.0.0.1", "-p", str(code_port)),
                *("-m", "clip_assets.definitions", "--location-name", LOCATION_NAME),
            ],
        )
        deployment.wait(lambda: code_server_serving(code_port, full_env), 90, "the code server to load clip_assets")
        deployment.start("daemon", ["dagster-daemon", "run", "-w", str(WORKSPACE)])
        deployment.start(
            "webserver", ["dagster-webserver", "-w", str(WORKSPACE), "-h", "127.0.0.1", "-p", str(web_port)]
        )
        deployment.wait(
            lambda: loaded_code_location(graphql, LOCATION_NAME),
            90,
            "the webserver to serve the clip_assets location",
            retry_on=(OSError,),  # refused until the webserver listens
        )
        yield deployment
    finally:
        deployment.stop()


def code_server_serving(port: int, env: Mapping[str, str]) -> bool:
    """`dagster api grpc-health-check` exits 0 once the server answers SERVING.

    `dagster code-server start` opens its port only after loading the code (or failing to, which the
    webserver's load status then reports).
    """
    check = subprocess.run(
        [script_path("dagster"), "api", "grpc-health-check", "-h", "127.0.0.1", "-p", str(port)],
        env=dict(env),
        capture_output=True,
        timeout=60,
    )
    return check.returncode == 0


def partitions_of(tags: Mapping[str, str], order: Sequence[str]) -> list[str]:
    """The partitions a run writes: its one partition, or its key range in the instance's partition order."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    start, end = order.index(tags[RANGE_START_TAG]), order.index(tags[RANGE_END_TAG])
    return list(order[start : end + 1])


# ---------------------------------------------------------------------------------------------------
# Finding processes (Linux /proc, no dependency)


def holders(paths: Iterable[Path], pids: Iterable[int]) -> dict[int, set[Path]]:
    """Which of `pids` have which of `paths` open right now."""
    wanted = {str(p) for p in paths}
    result: dict[int, set[Path]] = {}
    for pid in pids:
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                target = str(descriptor.readlink())
            except OSError:
                continue
            if target in wanted:
                result.setdefault(pid, set()).add(Path(target))
    return result


# ---------------------------------------------------------------------------------------------------
# Comparing output trees


def tree_files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def manifest_without_fingerprints(path: Path) -> dict[str, Any]:
    """A manifest minus what differs between two identical writes: each object's mtime-based fingerprint."""
    document: dict[str, Any] = json.loads(path.read_bytes())
    for entry in document["artifacts"].values():
        entry.pop("fingerprint", None)
    return document


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The largest number of [start, end) intervals that contain one instant."""
    spans = list(intervals)
    points = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    best = current = 0
    for _, step in points:  # an end sorts before a start at the same instant
        current += step
        best = max(best, current)
    return best
