"""Headless Chromium for the UI and gallery tests: Debian's `chromium` driven by Playwright, which never
downloads a browser here. Screenshots go to $CLIP_ASSETS_UI_SCREENSHOTS (default: `screenshots` under the
test's tmp_path)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from clip_assets_tests.support.processes import unavailable_here

if TYPE_CHECKING:
    from playwright.sync_api import Page, ViewportSize

CHROMIUM = os.environ.get("CLIP_ASSETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
UI_TIMEOUT_MS = 30_000


def require_browser() -> None:
    """Without Playwright or Chromium the test is skipped on a workstation and fails in CI."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright (pip install playwright)")
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install -y chromium, or set CLIP_ASSETS_CHROMIUM)")
    if missing:
        unavailable_here("browser test needs " + " and ".join(missing))


def screenshot_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CLIP_ASSETS_UI_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium_page(profile: Path, viewport: ViewportSize) -> Iterator[Page]:
    """Headless Chromium with a fresh profile; closed (with its processes) on exit."""
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=viewport
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            context.close()
