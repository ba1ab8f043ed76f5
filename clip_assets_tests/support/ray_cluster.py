"""A real Ray cluster of local processes for tests: a head with no CPUs and worker nodes of one CPU each.

Each node is `ray start --block` in a process group of its own, on its own loopback address (on Linux
Ray rewrites 127.0.0.1 to the machine's outward address, so nodes sharing it would be one node to
Ray), with its own ports, its own temp dir inside the test's, and `RAY_AUTH_MODE` set (a token written
to `~/.ray/auth_token` by any earlier `ray.init()` would otherwise turn token auth on for some
processes and not others). Nodes start one after another: two raylets started together race for a
port. A node is ended by SIGKILL to every process of its tree, by PID; `ray stop` would end every Ray
process on the machine, other tests' and other users' included.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from clip_assets_tests.support.processes import ServerGroup, ServerProcess, descendants, free_port

HEAD_IP = "127.0.0.2"
WORKER_IPS = ("127.0.0.3", "127.0.0.4")
# Ray's object store on a test node: small, the partitions' outcomes are what goes through it.
OBJECT_STORE_BYTES = 100_000_000
START_TIMEOUT_S = 120


@dataclass
class RayNode:
    name: str
    ip: str
    process: ServerProcess
    temp_dir: Path
    # What `ray start` was given beyond ports and paths: enough to start the node again.
    args: list[str]

    def pids(self) -> list[int]:
        """Every process of the node right now: `ray start`, its raylet, agents and workers, and theirs."""
        return [self.process.pid, *descendants(self.process.pid)]

    def kill(self) -> list[int]:
        """SIGKILL every process of the node at once, as a machine that loses power; the PIDs killed.

        The tree is read first, then killed, then read again by what it was started with (the node's temp
        dir), so a worker spawned while it was being killed, and reparented since, goes too.
        """
        killed = self.pids()
        for pid in killed:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in _started_under(self.temp_dir):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        self.process.popen.wait(30)
        return killed


@dataclass
class RayCluster(ServerGroup):
    """A head (no CPUs: no task or run lands on it) and worker nodes with `worker_cpus` each.

    `env` is what the nodes run with, and what a process that connects to the cluster (a test, a Dagster
    daemon, a run) needs: `RAY_ADDRESS`, the auth mode and, with token auth, the token's file.
    """

    root: Path
    gcs_port: int
    dashboard_port: int
    nodes: dict[str, RayNode] = field(default_factory=dict, kw_only=True)
    worker_cpus: int = field(default=1, kw_only=True)
    nodes_started: int = field(default=0, kw_only=True)
    lost: list[RayNode] = field(default_factory=list, kw_only=True)
    # Seconds from the first `ray start` to the last node listed alive.
    started_in_s: float = field(default=0.0, kw_only=True)
    # Every node id -> address the dashboard has listed: it drops a dead node from its list after a while.
    seen_node_ips: dict[str, str] = field(default_factory=dict, kw_only=True)

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        """Where jobs are submitted and the state API answers (Ray's dashboard)."""
        return f"http://{HEAD_IP}:{self.dashboard_port}"

    @property
    def workers(self) -> list[RayNode]:
        return [node for name, node in self.nodes.items() if name != "head"]

    def node_of_ip(self, ip: str) -> RayNode:
        return next(node for node in self.nodes.values() if node.ip == ip)

    def start_node(self, name: str, ip: str, args: list[str]) -> RayNode:
        """Start one node and wait until the cluster lists it alive (the next may start then)."""
        # Short: Ray's socket paths (at most 107 bytes) live under it.
        temp_dir = self.root / f"n{self.nodes_started}"
        self.nodes_started += 1
        temp_dir.mkdir()
        ports = [
            *("--node-ip-address", ip, "--temp-dir", str(temp_dir)),
            *("--node-manager-port", str(free_port()), "--object-manager-port", str(free_port())),
            *("--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port())),
            *("--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())),
            *("--min-worker-port", "0", "--max-worker-port", "0"),
        ]
        process = self.start(name, ["ray", "start", "--block", "--disable-usage-stats", *ports, *args])
        node = RayNode(name, ip, process, temp_dir, args)
        self.nodes[name] = node
        joined = f"Ray node {name} ({ip}) to join"
        self.wait(lambda: ip in self.alive_ips(), START_TIMEOUT_S, joined, retry_on=(OSError,))
        return node

    def add_worker(self) -> RayNode:
        """One more worker node, on the next address of WORKER_IPS, with `worker_cpus` CPUs."""
        used = {node.ip for node in self.nodes.values()}
        ip = next(ip for ip in WORKER_IPS if ip not in used)
        args = [
            *("--address", self.address, "--num-cpus", str(self.worker_cpus), "--num-gpus", "0"),
            *("--object-store-memory", str(OBJECT_STORE_BYTES)),
        ]
        return self.start_node(f"worker-{WORKER_IPS.index(ip) + 1}", ip, args)

    def kill(self, node: RayNode) -> list[int]:
        """SIGKILL every process of `node` (RayNode.kill); the cluster goes on without it."""
        killed = node.kill()
        del self.nodes[node.name]
        self.processes.remove(node.process)
        self.lost.append(node)
        return killed

    def restart(self, node: RayNode) -> RayNode:
        """A killed node back on its address, under a name of its own (Ray lists the old one as dead)."""
        self.lost.remove(node)
        return self.start_node(f"{node.name}-again", node.ip, node.args)

    def alive_ips(self) -> set[str]:
        """The addresses of the nodes the cluster's control store lists alive (the dashboard's node list)."""
        nodes = self.dashboard_get("/nodes?view=summary")["data"]["summary"]
        return {n["raylet"]["nodeManagerAddress"] for n in nodes if n["raylet"].get("state") == "ALIVE"}

    def dashboard_get(self, path: str) -> Any:
        request = urllib.request.Request(f"{self.dashboard_url}{path}", headers=self.auth_headers())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def auth_headers(self) -> dict[str, str]:
        token_path = self.env.get("RAY_AUTH_TOKEN_PATH")
        return {"Authorization": f"Bearer {Path(token_path).read_text().strip()}"} if token_path else {}

    def node_id_ips(self) -> dict[str, str]:
        """Ray's node id -> the node's address, for every node listed now or by any earlier call (a killed
        node's id still names it after the dashboard has let it go)."""
        nodes = self.dashboard_get("/nodes?view=summary")["data"]["summary"]
        self.seen_node_ips.update({n["raylet"]["nodeId"]: n["raylet"]["nodeManagerAddress"] for n in nodes})
        return dict(self.seen_node_ips)

    def jobs(self) -> list[dict[str, Any]]:
        """Ray's job table: every submitted job with its status and the node its driver ran on."""
        request = urllib.request.Request(f"{self.dashboard_url}/api/jobs/", headers=self.auth_headers())
        with urllib.request.urlopen(request, timeout=10) as response:
            jobs: list[dict[str, Any]] = json.load(response)
        return jobs

    def stop(self, timeout_s: float = 15) -> None:
        """Every node's tree killed by PID, workers first; nothing started under the cluster's root survives."""
        for node in reversed(list(self.nodes.values())):
            if node.process.popen.poll() is None:
                node.kill()
        for pid in _started_under(self.root):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _started_under(root: Path) -> list[int]:
    """Processes whose command line names a path under `root` (every Ray process names its temp dir or
    its session's sockets there)."""
    marker = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def node_environment(base: Mapping[str, str], auth: Literal["disabled", "token"], root: Path) -> dict[str, str]:
    """What every node, and every process that talks to the cluster, runs with.

    `dagster` (a Dagster run's entrypoint is that command) and Ray's own scripts are this interpreter's:
    its folder goes first on PATH.
    """
    env = {k: v for k, v in base.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = auth
    if auth == "token":
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    return env


@contextmanager
def ray_cluster(
    root: Path,
    *,
    workers: int = len(WORKER_IPS),
    worker_cpus: int = 1,
    auth: Literal["disabled", "token"] = "token",
    base_env: Mapping[str, str] | None = None,
) -> Iterator[RayCluster]:
    """A head on HEAD_IP with no CPUs and `workers` nodes of `worker_cpus` each (at most len(WORKER_IPS)),
    started one after another; every process ended on the way out. `root` should be short: Ray's socket
    paths live under it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    env = node_environment(base_env if base_env is not None else os.environ, auth, root)
    cluster = RayCluster(
        env,
        root,
        root / "logs",
        root=root,
        gcs_port=free_port(),
        dashboard_port=free_port(),
        worker_cpus=worker_cpus,
    )
    env["RAY_ADDRESS"] = cluster.address
    started = time.monotonic()
    try:
        cluster.start_node(
            "head",
            HEAD_IP,
            [
                *("--head", "--port", str(cluster.gcs_port), "--num-cpus", "0", "--num-gpus", "0"),
                *("--include-dashboard", "true", "--dashboard-host", HEAD_IP),
                *("--dashboard-port", str(cluster.dashboard_port), "--ray-client-server-port", str(free_port())),
                *("--object-store-memory", str(OBJECT_STORE_BYTES)),
            ],
        )
        for _ in range(workers):
            cluster.add_worker()
        cluster.started_in_s = time.monotonic() - started
        yield cluster
    finally:
        cluster.stop()
