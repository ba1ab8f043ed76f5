"""Fixtures: an inbox and an output folder on disk or in an object store (S3, Azure, GCS), a temporary
Dagster instance, and a runner.

The harness behind them lives in `clip_assets_tests/support/`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, instance_for_test

from clip_assets.storage.azure import API_VERSION
from clip_assets_tests.support.azurite import ACCOUNT_KEY, AzuriteServer, AzuriteSetupError, connection_string
from clip_assets_tests.support.dataset import materialize_partition
from clip_assets_tests.support.fake_gcs import FakeGcsServer, FakeGcsSetupError
from clip_assets_tests.support.fault_proxy import FaultProxy
from clip_assets_tests.support.localstack import LocalStackServer, LocalStackSetupError, localstack_python
from clip_assets_tests.support.processes import unavailable_here
from clip_assets_tests.support.reliability import Ledger, Recorder
from clip_assets_tests.support.s3_endpoint import (
    ACCESS_KEY,
    SECRET_KEY,
    MotoServer,
    S3Endpoint,
    s3_connection_via,
    s3_proxy,
)
from clip_assets_tests.support.stores import (
    MiB,
    StoreEndpoint,
    azure_operation,
    gcs_operation,
    xml_put_as_json_upload,
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
    proxy = s3_proxy(url)
    endpoint = S3Endpoint(proxy, f"clip-assets-{uuid.uuid4().hex[:12]}", s3_connection_via(proxy))
    endpoint.client.create_bucket(Bucket=endpoint.bucket)
    proxy.reset_counts()
    yield endpoint
    proxy.stop()


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """Azurite's blob service in its own process, on loopback, for the whole session (support/azurite.py)."""
    try:
        server = AzuriteServer(tmp_path_factory.mktemp("azurite"))
    except AzuriteSetupError as exc:
        unavailable_here(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """fake-gcs-server in its own process, on loopback, for the whole session (support/fake_gcs.py)."""
    try:
        server = FakeGcsServer(tmp_path_factory.mktemp("fake-gcs"))
    except FakeGcsSetupError as exc:
        unavailable_here(str(exc))
    yield server
    server.stop()


def _set(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def azure(azurite_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreEndpoint]:
    """A fresh container on Azurite behind the fault proxy, reached through AZURE_STORAGE_CONNECTION_STRING."""
    from azure.storage.blob import BlobServiceClient

    proxy = FaultProxy(azurite_server.url, azure_operation)
    env = _set(monkeypatch, {"AZURE_STORAGE_CONNECTION_STRING": connection_string(proxy.url)})
    container = f"clip-assets-{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(
        env["AZURE_STORAGE_CONNECTION_STRING"], api_version=API_VERSION
    ).create_container(container)
    proxy.reset_counts()
    options = {"azure_block_threshold": 6 * MiB, "azure_block_size": 2 * MiB}
    yield StoreEndpoint("azure", "az", container, proxy, env, options, secret=ACCOUNT_KEY)
    proxy.stop()


@pytest.fixture
def gcs(fake_gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreEndpoint]:
    """A fresh bucket on fake-gcs-server behind the fault proxy, reached through STORAGE_EMULATOR_HOST. The
    proxy turns Lance's XML API uploads into JSON API ones, which fake-gcs-server serves (support/stores.py).

    Any HTTP request for an address off loopback goes to a closed local port instead: a client looking
    for credentials (the metadata server) fails here rather than leaving the machine."""
    from google.cloud import storage

    proxy = FaultProxy(fake_gcs_server.url, gcs_operation, xml_put_as_json_upload)
    nowhere = "http://127.0.0.1:9"
    env = _set(
        monkeypatch,
        {
            "STORAGE_EMULATOR_HOST": proxy.url,
            "HTTP_PROXY": nowhere,
            "HTTPS_PROXY": nowhere,
            "NO_PROXY": "127.0.0.1,localhost",
        },
    )
    bucket = f"clip-assets-{uuid.uuid4().hex[:12]}"
    storage.Client().create_bucket(bucket)
    proxy.reset_counts()
    yield StoreEndpoint("gcs", "gs", bucket, proxy, env, {"gcs_chunk_size": MiB})
    proxy.stop()


@pytest.fixture
def s3_store(s3: S3Endpoint) -> StoreEndpoint:
    """`s3` as a `StoreEndpoint`, for the tests every store runs."""
    env = {"AWS_ENDPOINT_URL_S3": s3.proxy.url, "CLIP_ASSETS_S3_ADDRESSING_STYLE": "path"}
    options = s3.connection.storage_options()
    return StoreEndpoint("s3", "s3", s3.bucket, s3.proxy, env, options, s3.connection, secret=SECRET_KEY)


@pytest.fixture(params=["s3", "azure", "gcs"])
def store(request: pytest.FixtureRequest) -> StoreEndpoint:
    """Each object store in turn: S3 on moto, Azure Blob Storage on Azurite, GCS on fake-gcs-server."""
    fixture = "s3_store" if request.param == "s3" else request.param
    endpoint: StoreEndpoint = request.getfixturevalue(fixture)
    return endpoint


@pytest.fixture(params=["azure", "gcs"])
def cloud(request: pytest.FixtureRequest) -> StoreEndpoint:
    """Azure and GCS in turn, for what the S3 suite covers on S3 in tests of its own."""
    endpoint: StoreEndpoint = request.getfixturevalue(request.param)
    return endpoint
