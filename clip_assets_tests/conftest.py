"""Fixtures: an inbox and an output folder on disk or in S3, a temporary Dagster instance, and a runner."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, instance_for_test, materialize

from clip_assets.defs.resources import S3ConnectionResource, WriterSettingsResource
from clip_assets.storage.s3 import S3Storage
from clip_assets_tests.reliability import Ledger, Recorder
from clip_assets_tests.s3_endpoint import ACCESS_KEY, SECRET_KEY, FaultProxy, MotoServer
from clip_assets_tests.support.dataset import FAMILY_ASSETS, PARTITIONS_NAME, build_resources, processed_videos

LEDGER = Ledger()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    LEDGER.write_if_requested()


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Recorder:
    """Records what a reliability test tried into docs/reliability.md's ledger (see reliability.py)."""
    return LEDGER.for_test(request.node.originalname)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return tmp_path / "output"


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as test_instance:
        yield test_instance


Runner = Callable[..., ExecuteInProcessResult]


def materialize_partition(
    instance: DagsterInstance,
    partition_key: str,
    inbox: str,
    output: str,
    *,
    s3: S3ConnectionResource | None = None,
    assets: list | None = None,
    **settings: object,
) -> ExecuteInProcessResult:
    """Materialize output families of one partition (all of them, as `curate_videos` does, by default)."""
    known = instance.get_dynamic_partitions(PARTITIONS_NAME)
    if partition_key not in known:
        instance.add_dynamic_partitions(PARTITIONS_NAME, [partition_key])
    writer_settings = WriterSettingsResource(**{"input_path": "/videos", **settings})
    return materialize(
        [processed_videos, *(assets or FAMILY_ASSETS)],
        partition_key=partition_key,
        instance=instance,
        resources=build_resources(inbox, output, writer_settings, s3),
        raise_on_error=False,
    )


@pytest.fixture
def run_partition(inbox: Path, output: Path, instance: DagsterInstance) -> Runner:
    """Materialize every output family of one partition from the local inbox to the local output."""

    def run(partition_key: str, assets: list | None = None, **settings: object) -> ExecuteInProcessResult:
        return materialize_partition(instance, partition_key, str(inbox), str(output), assets=assets, **settings)

    return run


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A real S3 endpoint: moto's server in its own process, on loopback, for the whole session."""
    server = MotoServer()
    yield server
    server.stop()


@dataclass
class S3Endpoint:
    """A fresh bucket behind the fault proxy, and a connection resource configured for it."""

    proxy: FaultProxy
    bucket: str
    connection: S3ConnectionResource

    @property
    def client(self) -> Any:
        return self.connection.get_client()

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def storage(self, prefix: str) -> S3Storage:
        return S3Storage(self.client, self.url(prefix), self.connection.write_options())

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(info.key for info in self.storage(prefix).list())


def s3_connection_via(proxy: FaultProxy, **overrides: Any) -> S3ConnectionResource:
    """Small multipart sizes, so a test can cross the threshold with a few MiB."""
    settings: dict[str, Any] = {
        "endpoint_url": proxy.url,
        "addressing_style": "path",
        "multipart_threshold_mb": 6,
        "part_size_mb": 5,
        "max_attempts": 5,
    }
    return S3ConnectionResource(**{**settings, **overrides})


@pytest.fixture
def s3(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    """Credentials come from the environment, as the standard AWS chain provides them in production."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    proxy = FaultProxy(moto_server.url)
    endpoint = S3Endpoint(proxy, f"clip-assets-{uuid.uuid4().hex[:12]}", s3_connection_via(proxy))
    endpoint.client.create_bucket(Bucket=endpoint.bucket)
    proxy.reset_counts()
    yield endpoint
    proxy.stop()
