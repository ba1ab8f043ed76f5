"""S3: a partition's output uploaded by clip-assets against `aws s3 cp --recursive` of the same files.

Both talk to the same S3 endpoint on loopback: moto's server in its own process, started by the tests'
`clip_assets_tests.support.s3_endpoint.MotoServer`. Timed runs go straight to it; one more untimed pass of each,
over the first few partitions, goes through the tests' counting proxy (`FaultProxy`, which runs in this
process and would otherwise steal CPU from the side it serves) to report requests per S3 operation.
clip-assets runs the engine's code path with the output root `s3://bucket/ours` (the inbox stays local);
`aws` uploads the tree the engine produced locally, bookkeeping left out. Each repetition uses a fresh
bucket, deleted afterwards so moto's memory stays flat, and alternates which side goes first. The re-run
is measured twice: with the default stat (HEAD) of every recorded object, and with
`verify_unchanged_outputs=False`, which trusts the manifests (one GET per family and partition).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_local import inbox_for
from benchmarks.harness import Context, Row, Target, Timer, paired_ratios, progress, settle
from benchmarks.runners import INTERNAL_DIR, engine_write
from benchmarks.workloads import Workload
from clip_assets.components.resources import S3ConnectionResource
from clip_assets_tests.support.s3_endpoint import ACCESS_KEY, SECRET_KEY, MotoServer, s3_proxy

TARGET = Target("<=", 1.0, "<= 1x aws s3 cp")
RERUN_TARGET = Target("<=", 0.05, "< 5% of first run")
TRUSTED = "clip-assets re-run, manifests trusted"
# Requests are counted on this many partitions: enough to show the pattern, cheap through the in-process proxy.
COUNTED_PARTITIONS = 5
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def aws_environment() -> Iterator[None]:
    """The same credentials for both sides, from the environment (the standard AWS chain); restored afterwards."""
    saved = {name: os.environ.get(name) for name in AWS_ENVIRONMENT}
    os.environ.update(AWS_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connection(endpoint: str) -> S3ConnectionResource:
    return S3ConnectionResource(endpoint_url=endpoint, addressing_style="path")


def aws_cp(tree: Path, bucket: str, endpoint: str) -> None:
    command = ["aws", "s3", "cp", "--recursive", "--only-show-errors", "--no-progress"]
    command += ["--endpoint-url", endpoint, str(tree), f"s3://{bucket}/aws"]
    subprocess.run(command, check=True, env={**os.environ, **AWS_ENVIRONMENT})


def delete_bucket(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


def count_keys(client: Any, bucket: str, prefix: str) -> int:
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        count += sum(1 for item in page.get("Contents", []) if f"/{INTERNAL_DIR}/" not in f"/{item['Key']}")
    return count


def counted(server: MotoServer, inbox: Path, keys: Sequence[str], tree: Path, client: Any) -> dict[str, dict[str, int]]:
    """Requests per operation of each side for `keys`, through the counting proxy (untimed)."""
    engine_write(str(inbox), str(tree), keys)
    shutil.rmtree(tree / INTERNAL_DIR)
    proxy = s3_proxy(server.url)
    bucket = "bench-counted"
    client.create_bucket(Bucket=bucket)
    found: dict[str, dict[str, int]] = {}
    try:
        for label in ("clip-assets first run", "clip-assets re-run", TRUSTED, "aws s3 cp"):
            proxy.reset_counts()
            if label == "aws s3 cp":
                aws_cp(tree, bucket, proxy.url)
            else:
                engine_write(str(inbox), f"s3://{bucket}/ours", keys, connection(proxy.url), label != TRUSTED)
            found[label] = dict(sorted(Counter(proxy.counts).items()))
    finally:
        proxy.stop()
        delete_bucket(client, bucket)
    return found


def run(ctx: Context, workloads: Sequence[Workload]) -> list[Row]:
    if shutil.which("aws") is None:
        progress("SKIPPED S3 benchmark: the AWS CLI is missing (pip install awscli)")
        return []
    version = subprocess.run(["aws", "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    progress("S3: starting moto's server in its own process")
    server = MotoServer()
    try:
        with aws_environment():
            s3 = connection(server.url)
            client = s3.get_client()
            for workload in workloads:
                rows.extend(run_workload(ctx, workload, server, s3, client, version))
    finally:
        server.stop()
    return rows


def run_workload(
    ctx: Context, workload: Workload, server: MotoServer, s3: S3ConnectionResource, client: Any, version: str
) -> list[Row]:
    inbox, keys = inbox_for(ctx, workload)
    tree = ctx.scratch / f"s3-tree-{workload.name}"
    engine_write(str(inbox), str(tree), keys)  # also the warm-up
    shutil.rmtree(tree / INTERNAL_DIR)
    ours: list[float] = []
    reruns: list[float] = []
    trusted: list[float] = []
    aws: list[float] = []
    for index in range(ctx.repeat):
        progress(f"S3 {workload.name}: repetition {index + 1}/{ctx.repeat}")
        bucket = f"bench-{workload.name.lower()}-{index}"
        client.create_bucket(Bucket=bucket)
        for side in ("clip-assets", "aws") if index % 2 == 0 else ("aws", "clip-assets"):
            settle()
            if side == "aws":
                with Timer() as timer:
                    aws_cp(tree, bucket, server.url)
                aws.append(timer.seconds)
                continue
            with Timer() as timer:
                engine_write(str(inbox), f"s3://{bucket}/ours", keys, s3)
            ours.append(timer.seconds)
            settle()
            with Timer() as timer:
                engine_write(str(inbox), f"s3://{bucket}/ours", keys, s3)
            reruns.append(timer.seconds)
            settle()
            with Timer() as timer:
                engine_write(str(inbox), f"s3://{bucket}/ours", keys, s3, verify_unchanged=False)
            trusted.append(timer.seconds)
        if count_keys(client, bucket, "ours/") != count_keys(client, bucket, "aws/"):
            raise RuntimeError(f"S3 {workload.name}: the two sides uploaded different numbers of objects")
        delete_bucket(client, bucket)
    files = sum(1 for path in tree.rglob("*") if path.is_file())
    shutil.rmtree(tree)
    sample = keys[:COUNTED_PARTITIONS]
    progress(f"S3 {workload.name}: one more pass of each through the counting proxy, {len(sample)} partitions")
    requests = counted(server, inbox, sample, ctx.scratch / f"s3-counted-{workload.name}", client)
    shutil.rmtree(ctx.scratch / f"s3-counted-{workload.name}")
    details = {
        "objects": files,
        f"requests_for_{len(sample)}_partitions": requests,
        "aws_cli": version,
        "endpoint": "moto server, loopback",
    }
    return [
        Row("S3", workload.description, f"floor: aws s3 cp --recursive ({files} objects)", "s", aws, "itself", aws,
            [1.0] * len(aws), details=details),
        Row("S3", workload.description, "clip-assets engine -> s3://", "s", ours, "aws s3 cp", aws,
            paired_ratios(ours, aws), target=TARGET, details=details),
        Row("S3", workload.description, "clip-assets re-run (HEAD per object)", "s", reruns, "first run", ours,
            paired_ratios(reruns, ours), ratio_label="x first run", target=RERUN_TARGET, details=details),
        Row("S3", workload.description, "clip-assets re-run, verify_unchanged_outputs=False", "s", trusted,
            "first run", ours, paired_ratios(trusted, ours), ratio_label="x first run", target=RERUN_TARGET,
            details=details),
    ]  # fmt: skip
