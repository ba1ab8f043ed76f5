"""The UI in a real browser: a backfill through the webserver and the daemon, then what the pages show.

Four processed videos are registered with `clip-assets discover`; `dagster-webserver` and `dagster-daemon`
load the code location through the repository's workspace.yaml, as `dagster dev` does; a backfill of three
partitions of the `clip_outputs` assets is launched through GraphQL, as the UI's Materialize dialog
launches one; then headless Chromium (Debian's `chromium`, driven by Playwright) reads the lineage graph,
the group's asset list, the backfill's page and one partition's materialization, and the test checks what
they show against the files on disk. Screenshots go to $CLIP_ASSETS_UI_SCREENSHOTS (default: `screenshots`
under the test's tmp_path).
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlparse

import pytest
from PIL import Image

from clip_assets import layout
from clip_assets.engine.manifest import PartitionManifest
from clip_assets.families.clip_previews import THUMBNAIL_SIZE
from clip_assets_tests.support.browser import chromium_page, require_browser, screenshot_folder
from clip_assets_tests.support.dataset import stored_output_digest
from clip_assets_tests.support.factories import write_video
from clip_assets_tests.support.graphql import (
    BACKFILL_DONE,
    DagsterGraphQL,
    backfill_state,
    latest_materialization_metadata,
    launch_asset_backfill,
    loaded_code_location,
    partition_stats,
    run_failures,
    stop_all_sensors,
)
from clip_assets_tests.support.processes import ServerGroup, free_port, script_path, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, ViewportSize

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
LOCATION = "clip_assets"
GROUP = "clip_outputs"
FAMILIES = ["clip_embeddings", "clip_files", "clip_metadata", "clip_previews", "video_summaries"]
# `discover` registers in sorted order; the first three are consecutive, so one run of the backfill
# (BackfillPolicy.multi_run, 25 partitions per run) handles all of them.
VIDEOS = ["cam1/market.mp4", "cam1/street walk.mp4", "cam2/harbour.mp4", "cam2/tunnel.mp4"]
BACKFILLED = VIDEOS[:3]
NOT_BACKFILLED = VIDEOS[3]
SHOWN_PARTITION = "cam1/street walk.mp4"  # a space and a slash: the key must survive URLs and the UI
# What the lineage graph shows for a partitioned asset: Math.floor(materialized / total * 100).
FILLED = f"{100 * len(BACKFILLED) // len(VIDEOS)}% filled"

VIEWPORT: ViewportSize = {"width": 1920, "height": 1400}  # the whole lineage graph, full paths
CODE_LOCATION_TIMEOUT_S = 120.0
BACKFILL_TIMEOUT_S = 240.0  # the backfill daemon looks every 30 s: submission, then completion
# No telemetry, and no "join the community" dialog over the pages a fresh instance would show.
DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


@dataclass
class DagsterStack(ServerGroup):
    """A Dagster instance on disk with the code location served by a real webserver (and later a daemon)."""

    home: Path
    inbox: Path
    output: Path
    base_url: str
    graphql: DagsterGraphQL


@contextmanager
def _explained(stack: DagsterStack, *extra: Callable[[], str]) -> Iterator[None]:
    """On failure, print the servers' logs and whatever `extra` can tell (pytest shows it with the failure)."""
    try:
        yield
    except BaseException:
        for describe in extra:
            try:
                print(describe())
            except Exception as error:  # a report must not hide the original failure
                print(f"(could not describe: {error!r})")
        print(stack.logs(120))
        raise


@pytest.fixture
def dagster_stack(tmp_path: Path) -> Iterator[DagsterStack]:
    """Processed videos registered as partitions, and `dagster-webserver` with the code location loaded.

    The sensors are stopped before anything else: they run by default and would request their own runs of
    the same partitions as soon as a daemon runs.
    """
    require_browser()  # before minutes of setup that would be for nothing
    home, inbox, output, log_dir = (tmp_path / name for name in ("dagster_home", "inbox", "output", "logs"))
    for folder in (home, inbox, log_dir):
        folder.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    for name in VIDEOS:
        write_video(inbox / f"{name}.parquet", source_video=f"/videos/{name}", num_clips=3, filtered=[1])
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLIP_ASSETS_")}
    env.update(
        DAGSTER_HOME=str(home),
        CLIP_ASSETS_INBOX=str(inbox),
        CLIP_ASSETS_OUTPUT=str(output),
        CLIP_ASSETS_INPUT_PATH="/videos",
    )
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    stack = DagsterStack(
        env,
        tmp_path,
        log_dir,
        home=home,
        inbox=inbox,
        output=output,
        base_url=base_url,
        graphql=DagsterGraphQL(base_url),
    )
    try:
        with _explained(stack):
            discovered = subprocess.run(
                [script_path("clip-assets"), "discover"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert discovered.returncode == 0, discovered.stderr
            assert f"{len(VIDEOS)} new partitions" in discovered.stderr, discovered.stderr

            stack.start("webserver", ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE)])
            stack.wait(
                lambda: loaded_code_location(stack.graphql, LOCATION),
                CODE_LOCATION_TIMEOUT_S,
                "code location",
                retry_on=(OSError,),  # refused until the webserver listens
            )
            assert "processed_video_sensor" in stop_all_sensors(stack.graphql, LOCATION)
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    return screenshot_folder(tmp_path)


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Page]:
    with chromium_page(tmp_path / "chromium-profile", VIEWPORT) as page:
        yield page


def _metadata_value(page: Page, label: str) -> Locator:
    """The value cell of a row of the materialization's metadata table."""
    return page.locator(f"xpath=//tr[td[1][normalize-space()='{label}']]/td[2]")


def _table_row(anchor: Locator) -> Locator:
    """The row of the UI's (virtualized, div-based) tables that holds `anchor`."""
    return anchor.locator("xpath=ancestor::div[contains(@class, 'VirtualizedTable_row')][1]")


def _shoot(page: Page, folder: Path, name: str, taken: list[Path]) -> None:
    path = folder / f"{len(taken) + 1:02d}-{name}.png"
    page.screenshot(path=path, animations="disabled")  # a tooltip fully faded in, not half-way
    taken.append(path)


def _manifest(output: Path, family: str, partition: str) -> PartitionManifest:
    return PartitionManifest.from_bytes((output / layout.manifest_key(family, partition)).read_bytes())


# Servers up (2 min bound), a backfill through the daemon (4 min bound), then the browser.
@pytest.mark.timeout(900)
def test_backfill_through_the_daemon_and_what_the_ui_shows(
    dagster_stack: DagsterStack, browser_page: Page, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    stack, graphql, page = dagster_stack, dagster_stack.graphql, browser_page
    done, total = len(BACKFILLED), len(VIDEOS)
    taken: list[Path] = []
    started = time.monotonic()
    backfill: dict[str, Any] = {}

    def backfill_report() -> str:
        lines = [f"backfill: {backfill}"]
        for run in backfill.get("runs", []):
            lines += [
                f"run {run['runId']} {run['status']}: {failure}" for failure in run_failures(graphql, run["runId"])
            ]
        return "\n".join(lines)

    def failure_screenshot() -> str:
        path = screenshots / "failure.png"
        page.screenshot(path=path, full_page=True)
        return f"page at failure: {page.url}; screenshots kept in {screenshots}: {[p.name for p in taken]}"

    with _explained(stack, backfill_report, failure_screenshot):
        # 1. A backfill of three of the four partitions of every clip_outputs asset, picked up by the daemon.
        backfill_id = launch_asset_backfill(graphql, FAMILIES, BACKFILLED, title="ui test")
        stack.start("daemon", ["dagster-daemon", "run", "-w", str(WORKSPACE)])

        def finished() -> dict[str, Any] | None:
            backfill.update(backfill_state(graphql, backfill_id))
            return backfill if backfill["status"] in BACKFILL_DONE else None

        stack.wait(finished, BACKFILL_TIMEOUT_S, f"backfill {backfill_id}", interval_s=1.0)
        assert backfill["status"] == "COMPLETED_SUCCESS", backfill
        assert sorted(backfill["partitionNames"]) == sorted(BACKFILLED)
        assert [run["status"] for run in backfill["runs"]] == ["SUCCESS"], "3 consecutive partitions: one run"
        backfill_s = time.monotonic() - started

        # 2. Through GraphQL: three of four partitions materialized per family, with the manifests on disk.
        stats = {"numMaterialized": done, "numPartitions": total, "numFailed": 0, "numMaterializing": 0}
        assert partition_stats(graphql, FAMILIES) == dict.fromkeys(FAMILIES, stats)
        for family in FAMILIES:
            for partition in BACKFILLED:
                metadata = latest_materialization_metadata(graphql, family, partition)
                assert metadata is not None, (family, partition)
                manifest = _manifest(stack.output, family, partition)
                stored = stored_output_digest(stack.output, family, partition)
                assert metadata["manifest_sha256"] == stored, (family, partition)
                assert metadata["artifacts"] == len(manifest.entries) > 0, (family, partition)
            assert latest_materialization_metadata(graphql, family, NOT_BACKFILLED) is None, family

        # 3. The lineage graph of the group: every asset, its partition fill, its neighbours.
        page.goto(f"{stack.base_url}/locations/{LOCATION}/asset-groups/{GROUP}")
        for family in FAMILIES:
            links = page.locator(f'a[href="/assets/{family}?view=partitions"]')
            expect(links).to_have_text([FILLED, f"{total} partitions"])
            expect(page.get_by_text(family, exact=True).first).to_be_visible()
        for neighbour in ("processed_videos", "dataset_summary"):
            expect(page.get_by_text(neighbour, exact=True).first).to_be_visible()
        _shoot(page, screenshots, "lineage-clip_outputs", taken)

        # 4. The group's asset list: per asset, materialized / missing / failed / materializing partitions.
        page.goto(f"{stack.base_url}/locations/{LOCATION}/asset-groups/{GROUP}/list")
        for family in FAMILIES:
            row = _table_row(page.get_by_test_id(f"checkbox-{family}"))
            expect(row).to_contain_text(f"{total} partitions")
            counts = row.locator("xpath=.//*[@role='img' and starts-with(@aria-label, 'partition_')]/..")
            expect(counts).to_have_text([str(done), str(total - done), "0", "0"])
        expect(page.locator('a[href^="/assets/"] [title] > span')).to_have_text(FAMILIES)  # these five, no others
        first_count = _table_row(page.get_by_test_id("checkbox-clip_files")).locator(
            "xpath=.//*[@role='img' and @aria-label='partition_success']/.."
        )
        first_count.first.hover()
        expect(page.get_by_role("tooltip")).to_have_text(f"{done} materialized partitions")
        _shoot(page, screenshots, "asset-list-clip_outputs", taken)

        # 5. The backfill's own page: succeeded, the three partitions, 3 targeted / 0 / 3 succeeded / 0 failed.
        page.goto(f"{stack.base_url}/runs/b/{backfill_id}")
        status = page.locator("xpath=//div[normalize-space()='Status']/following-sibling::*[1]")
        expect(status).to_have_text("Succeeded")
        for partition in BACKFILLED:
            expect(page.get_by_text(partition, exact=True)).to_be_visible()
        expect(page.get_by_text(NOT_BACKFILLED, exact=True)).to_have_count(0)
        for family in FAMILIES:
            row = _table_row(page.locator(f'a[href="/assets/{family}"]'))
            expect(row).to_contain_text("100% completed")
            targeted_running_succeeded_failed = [str(done), "0", str(done), "0"]
            expect(row.locator("xpath=./div/div[position() > 1]")).to_have_text(targeted_running_succeeded_failed)
        _shoot(page, screenshots, "backfill", taken)

        # 6. One partition of clip_files, picked in the Partitions tab as a person would.
        page.goto(f"{stack.base_url}/assets/clip_files?view=partitions")
        expect(page.get_by_text(f"Materialized ({done})", exact=True)).to_be_visible()
        expect(page.get_by_text(f"Missing ({total - done})", exact=True)).to_be_visible()
        page.get_by_text(SHOWN_PARTITION, exact=True).first.click()
        expect(page.get_by_text("Materialized", exact=True)).to_be_visible()  # the partition's status tag
        manifest = _manifest(stack.output, "clip_files", SHOWN_PARTITION)
        shown_digest = stored_output_digest(stack.output, "clip_files", SHOWN_PARTITION)
        expect(_metadata_value(page, "manifest_sha256")).to_have_text(shown_digest)
        expect(_metadata_value(page, "source")).to_have_text(f"{stack.inbox}/{SHOWN_PARTITION}.parquet")
        manifest_path = stack.output / layout.manifest_key("clip_files", SHOWN_PARTITION)
        expect(_metadata_value(page, "manifest")).to_have_text(str(manifest_path))
        expect(_metadata_value(page, "artifacts")).to_have_text(str(len(manifest.entries)))
        expect(_metadata_value(page, "written")).to_have_text(str(len(manifest.entries)))
        expect(_metadata_value(page, "count_filtered_clips")).to_have_text("1")
        for key, entry in manifest.entries.items():  # the artifact table lists each file's sha256
            expect(_metadata_value(page, "artifact_hashes")).to_contain_text(key)
            expect(_metadata_value(page, "artifact_hashes")).to_contain_text(entry.sha256)
        assert parse_qs(urlparse(page.url).query)["partition"] == [SHOWN_PARTITION], page.url  # a deep link
        _shoot(page, screenshots, "clip_files-partition", taken)

        # 7. The same partition of clip_previews: the thumbnail is the first preview's first frame.
        page.goto(f"{stack.base_url}/assets/clip_previews?view=partitions&partition={quote(SHOWN_PARTITION, safe='')}")
        manifest = _manifest(stack.output, "clip_previews", SHOWN_PARTITION)
        shown_digest = stored_output_digest(stack.output, "clip_previews", SHOWN_PARTITION)
        expect(_metadata_value(page, "manifest_sha256")).to_have_text(shown_digest)
        preview = _metadata_value(page, "preview")
        preview_key = preview.locator("code").first.inner_text()
        assert preview_key in manifest.entries, preview_key
        image = preview.locator("img")
        expect(image).to_have_count(1)
        image.scroll_into_view_if_needed()
        wait_for(lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"), 10, "thumbnail")
        shown_size = tuple(image.evaluate("img => [img.naturalWidth, img.naturalHeight]"))
        src = image.get_attribute("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:40]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as png:
            shown = png.convert("RGB")
        with Image.open(stack.output / preview_key) as webp:
            frame = webp.convert("RGB")
        frame.thumbnail(THUMBNAIL_SIZE)
        assert shown_size == shown.size == frame.size
        assert shown.tobytes() == frame.tobytes()
        _shoot(page, screenshots, "clip_previews-partition-thumbnail", taken)

    print(f"backfill done after {backfill_s:.0f} s, test body {time.monotonic() - started:.0f} s")
    print(f"screenshots: {[str(path) for path in taken]}")
