"""The soak test's harness: a seeded plan of random faults, fired as the work progresses, and what S3 holds.

Faults fire on progress, not on the clock: each one at a number of PutObject requests the fault proxy
has forwarded, drawn from the seed as a fraction of what the clean run sent. The same seed hits the same
stretch of the work on a fast machine and on a busy one, where a clock would hit idle time on one and
the middle of a write on the other.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SEED_VAR = "CLIP_ASSETS_SOAK_SEED"

S3_5XX = "S3 5xx burst"
S3_RESETS = "S3 connection resets"
S3_OUTAGE = "S3 outage (every connection reset for seconds)"
RUN_KILL = "SIGKILL of a run worker mid-write"
PG_RESTART = "PostgreSQL restart"
KINDS = (S3_5XX, S3_RESETS, S3_OUTAGE, RUN_KILL, PG_RESTART)

# What S3 answers under load or trouble, as botocore sees it (all retried in its standard mode).
SERVER_ERRORS = ((503, "SlowDown"), (500, "InternalError"), (503, "ServiceUnavailable"))
# The requests a fault picks from: every operation, the writes, or the reads and checks.
TARGETS = ((), ("PutObject",), ("HeadObject", "GetObject"), ("PutObject", "DeleteObject"), ("ListObjects",))


@dataclass(frozen=True)
class PlannedFault:
    kind: str
    at_puts: int  # fires once the proxy has forwarded this many PutObject requests
    operations: tuple[str, ...] = ()  # S3 faults: the operations hit (empty: any)
    count: int = 0  # S3 bursts: how many requests are answered with the fault
    status: int = 0
    code: str = ""
    seconds: float = 0.0  # the outage's length

    def describe(self) -> str:
        target = "/".join(self.operations) or "any request"
        if self.kind == S3_5XX:
            return f"{self.kind}: {self.count} x {self.status} {self.code} on {target}"
        if self.kind == S3_RESETS:
            return f"{self.kind}: {self.count} on {target}"
        if self.kind == S3_OUTAGE:
            return f"{self.kind}: {self.seconds:.1f} s"
        return self.kind


def plan_faults(rng: random.Random, expected_puts: int) -> list[PlannedFault]:
    """Three to five 5xx bursts and two or three bursts of resets anywhere in the work; one outage longer
    than botocore's retries ride out (so some writes fail for good); one run worker killed early (so
    most of the work is still ahead of its retry); one PostgreSQL restart in the middle.

    Bursts stay short (at most 6 requests, spread over every client): a burst longer than the retries
    would only repeat the outage.
    """

    def at(low: float, high: float) -> int:
        return max(1, round(expected_puts * rng.uniform(low, high)))

    faults = []
    for _ in range(rng.randint(3, 5)):
        status, code = rng.choice(SERVER_ERRORS)
        faults.append(PlannedFault(S3_5XX, at(0.05, 0.8), rng.choice(TARGETS), rng.randint(2, 6), status, code))
    for _ in range(rng.randint(2, 3)):
        faults.append(PlannedFault(S3_RESETS, at(0.05, 0.8), rng.choice(TARGETS), rng.randint(1, 3)))
    faults.append(PlannedFault(S3_OUTAGE, at(0.3, 0.7), seconds=round(rng.uniform(6.0, 12.0), 1)))
    faults.append(PlannedFault(RUN_KILL, at(0.1, 0.3)))
    faults.append(PlannedFault(PG_RESTART, at(0.35, 0.6)))
    return sorted(faults, key=lambda fault: fault.at_puts)


# How a failed run's messages name the fault that failed it. Anything else is not an injected fault.
CAUSES = {
    RUN_KILL: re.compile(r"signal 9|SIGKILL"),
    PG_RESTART: re.compile(
        r"psycopg2|OperationalError|DagsterPostgresException|too many retries for DB"
        r"|server closed the connection|database system is (shutting down|starting up)"
        r"|terminating connection due to administrator command|connection to server .* failed"
    ),
    "S3 request failed beyond its retries": re.compile(
        r"s3://\S+.*(SlowDown|InternalError|ServiceUnavailable|Connection was closed|Connection reset"
        r"|Could not connect|EndpointConnectionError|ConnectionClosedError|IncompleteRead|ResponseStreamingError"
        r"|Read timeout|Max retries|reached max retries|lease lost|held by)",
        re.DOTALL,
    ),
}


def failure_cause(messages: Iterable[str]) -> str | None:
    """Which injected fault a failed run's messages name, or None when they name none."""
    text = "\n".join(messages)
    for cause, pattern in CAUSES.items():
        if pattern.search(text):
            return cause
    return None


@dataclass
class SoakFigures:
    """What one soak did and what it took, as the ledger shows it."""

    seed: int
    partitions: int
    planned: list[PlannedFault]
    fired: list[tuple[PlannedFault, str]] = field(default_factory=list)  # (fault, what it hit)
    requests_hit: Counter[str] = field(default_factory=Counter)  # proxy answers by kind
    runs: int = 0
    runs_failed: Counter[str] = field(default_factory=Counter)  # by cause
    runs_retried: int = 0
    partitions_rerun: int = 0
    backfill_runs: int = 0
    wall_s: dict[str, float] = field(default_factory=dict)

    def fired_by_kind(self) -> Counter[str]:
        return Counter(fault.kind for fault, _ in self.fired)

    def rows(self) -> list[tuple[str, str]]:
        by_kind = self.fired_by_kind()
        faults = ", ".join(f"{kind}: {by_kind[kind]}" for kind in KINDS if by_kind[kind])
        failed = ", ".join(f"{cause}: {n}" for cause, n in sorted(self.runs_failed.items())) or "none"
        return [
            ("seed", f"{self.seed} (`{SEED_VAR}` overrides it)"),
            ("partitions", str(self.partitions)),
            ("faults injected", f"{sum(by_kind.values())} ({faults})"),
            ("S3 requests answered with a fault", f"{sum(self.requests_hit.values())} ({_counts(self.requests_hit)})"),
            ("faults after which the output still equals a clean run's", f"{len(self.fired)} of {len(self.fired)}"),
            ("runs launched by the daemon (sensor, retries, backfill)", str(self.runs)),
            ("runs failed, by cause", failed),
            ("runs retried by the daemon", str(self.runs_retried)),
            ("partitions re-run by the final backfill", f"{self.partitions_rerun} (in {self.backfill_runs} runs)"),
            ("wall time", ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.wall_s.items())),
        ]


def _counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items()))


# ---------------------------------------------------------------------------------------------------
# What the bucket holds, read straight from the S3 server (never through the fault proxy)


def keys(client: Any, bucket: str, root: str, under: str = "") -> list[str]:
    """The keys below `root + under`, relative to `root`."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root + under)
    return [item["Key"][len(root) :] for page in pages for item in page.get("Contents", [])]


def objects(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix` (keys relative to it), downloaded."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix) :]] = body
    return found


def delete_all(client: Any, bucket: str, prefix: str) -> int:
    deleted = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    return deleted


def unfinished_uploads(client: Any, bucket: str, prefix: str) -> list[str]:
    """Multipart uploads begun and neither completed nor aborted (invisible, but stored and billed)."""
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
    return [upload["Key"] for page in pages for upload in page.get("Uploads", [])]


def sha256s(tree: Mapping[str, bytes]) -> dict[str, str]:
    return {key: hashlib.sha256(data).hexdigest() for key, data in tree.items()}


def tree_differences(actual: Mapping[str, str], expected: Mapping[str, str]) -> dict[str, list[str]]:
    """Keys missing, keys extra (orphans), keys whose sha256 differs: empty lists when equal."""
    return {
        "missing": sorted(set(expected) - set(actual)),
        "extra": sorted(set(actual) - set(expected)),
        "different bytes": sorted(k for k in set(actual) & set(expected) if actual[k] != expected[k]),
    }
