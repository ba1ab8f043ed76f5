"""Fixtures: an inbox and an output folder on disk or in S3, a temporary Dagster instance, and a runner.

The harness behind them lives in `clip_assets_tests/support/`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, instance_for_test

from clip_assets_tests.support.dataset import materialize_partition
from clip_assets_tests.support.localstack import LocalStackServer, LocalStackSetupError, localstack_python
from clip_assets_tests.support.processes import unavailable_here
from clip_assets_tests.support.reliability import Ledger, Recorder
from clip_assets_tests.support.s3_endpoint import (
    ACCESS_KEY,
    SECRET_KEY,
    FaultProxy,
    MotoServer,
    S3Endpoint,
    s3_connection_via,
)

LEDGER = Ledger()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    LEDGER.write_if_requested()


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Recorder:
    """Records what a reliability test tried into docs/reliability.md's ledger (see support/reliability.py)."""
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


@pytest.fixture(scope="session")
def localstack_server() -> Iterator[LocalStackServer]:
    """LocalStack's S3 provider, a second S3 implementation that validates checksums (support/localstack.py)."""
    try:
        server = LocalStackServer(localstack_python())
    except LocalStackSetupError as exc:
        unavailable_here(str(exc))
    yield server
    server.stop()


@pytest.fixture
def s3(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    """Credentials come from the environment, as the standard AWS chain provides them in production."""
    yield from endpoint_behind_proxy(moto_server.url, monkeypatch)


@pytest.fixture(params=["moto", "localstack"])
def s3_implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    """`s3`, once on moto and once on LocalStack: what one S3 implementation lets through, the other may not."""
    server = request.getfixturevalue(f"{request.param}_server")
    yield from endpoint_behind_proxy(server.url, monkeypatch)


@pytest.fixture
def localstack_s3(localstack_server: LocalStackServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    """`s3` on LocalStack only, for what moto cannot show (it stores a body whose checksum does not match)."""
    yield from endpoint_behind_proxy(localstack_server.url, monkeypatch)


def endpoint_behind_proxy(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    proxy = FaultProxy(url)
    endpoint = S3Endpoint(proxy, f"clip-assets-{uuid.uuid4().hex[:12]}", s3_connection_via(proxy))
    endpoint.client.create_bucket(Bucket=endpoint.bucket)
    proxy.reset_counts()
    yield endpoint
    proxy.stop()
