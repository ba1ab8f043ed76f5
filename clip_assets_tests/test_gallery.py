"""The clip gallery on real outputs: every passed clip once with working relative links, files rewritten only
when they change, a removed video's clips gone; and in headless Chromium, opened from disk and served over
HTTP from the S3 endpoint: previews really decode, filters really narrow (loading only pages that may
match), paging works. Screenshots go to the test's `screenshots` folder."""

from __future__ import annotations

import base64
import json
import posixpath
import random
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pytest

from clip_assets import layout
from clip_assets.dataset import clip_index
from clip_assets.dataset.gallery import PAGE_SIZE as PAGE_SIZE_DEFAULT
from clip_assets.dataset.gallery import (
    bloom_positions,
    caption_words,
    gallery_files,
    page_file_name,
    verify_gallery,
    write_gallery,
)
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.browser import chromium_page, screenshot_folder
from clip_assets_tests.support.curated import TOPICS, curated_clips, index_rows, passed_ids, write_videos
from clip_assets_tests.support.dataset import materialize_partition
from clip_assets_tests.support.factories import tiny_webp, write_video

VIDEOS = ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
PAGE_SIZE = 3  # 8 passed clips in 4 videos: 3 pages


def page_clips(files: dict[str, bytes]) -> list[dict[str, object]]:
    """Every clip of the page files, in page order (each file is `clipGallery.page(n, [...]);`)."""
    clips: list[dict[str, object]] = []
    number = 0
    while (data := files.get(layout.gallery_file_key(page_file_name(number)))) is not None:
        match = re.fullmatch(rf"clipGallery\.page\({number},(.*)\);\n", data.decode(), re.DOTALL)
        assert match, data[:80]
        clips += json.loads(match.group(1))
        number += 1
    return clips


def filter_index(files: dict[str, bytes]) -> dict[str, object]:
    data = files[layout.gallery_file_key("filter.js")].decode()
    return json.loads(data.removeprefix("clipGallery.index(").removesuffix(");\n"))


@pytest.fixture
def gallery(inbox: Path, output: Path, instance):
    write_videos(instance, inbox, str(output), VIDEOS)
    storage = LocalStorage(output)
    rows = index_rows(storage, VIDEOS)
    return storage, rows, write_gallery(storage, rows, page_size=PAGE_SIZE)


def test_every_passed_clip_once_with_links_that_resolve(gallery, output):
    storage, rows, build = gallery
    files = {info.key: storage.read(info.key) for info in storage.list(layout.GALLERY)}
    clips = page_clips(files)
    assert sorted(c["id"] for c in clips) == sorted(passed_ids(rows)) and len(clips) == build.clips == 8
    assert build.pages == 3 and build.videos == 4
    # What each tile must show, from the clips the test wrote (not from the index the gallery was made of).
    written = {clip.uuid: clip for name in VIDEOS for clip in curated_clips(name) if not clip.filtered}
    for clip in clips:
        source = written[clip["id"]]
        for link in (clip["p"], clip["f"], clip["j"]):
            assert isinstance(link, str) and link.startswith("../") and "://" not in link
            assert (output / posixpath.normpath(posixpath.join("gallery", link))).is_file(), link
        assert clip["f"] == f"../clips/{source.uuid}.mp4" and clip["j"] == f"../metas/v0/{source.uuid}.json"
        assert [text for _, text in clip["c"]] == [text for w in source.windows for text in w.captions.values()]
        assert clip["a"] == source.aesthetic_score and clip["d"] == round(source.span_end - source.span_start, 2)
    index = filter_index(files)
    assert index["clips"] == 8 and index["videos"] == VIDEOS and len(index["pages"]) == 3
    for number, summary in enumerate(index["pages"]):
        on_page = clips[number * PAGE_SIZE : (number + 1) * PAGE_SIZE]
        assert summary["videos"] == [min(c["v"] for c in on_page), max(c["v"] for c in on_page)]
        bloom = base64.b64decode(summary["bloom"])
        words = {w for c in on_page for _, text in c["c"] + c["e"] for w in caption_words(text)}
        for word in words:  # no false negatives: every word of the page is in its filter
            assert all(bloom[p // 8] >> (p % 8) & 1 for p in bloom_positions(word, summary["bloomBits"])), word


def test_unchanged_files_are_not_rewritten_and_a_removed_video_leaves_nothing(gallery, output):
    storage, rows, first = gallery
    assert len(first.written) == 3 + first.pages + 1  # page, script, style, the pages, the filter index
    again = write_gallery(storage, rows, page_size=PAGE_SIZE)
    assert again.written == [] and again.unchanged == len(first.written)

    without_b = index_rows(storage, ["a.mp4", "c.mp4", "d.mp4"])
    b_ids = passed_ids(rows) - passed_ids(without_b)
    build = write_gallery(storage, without_b, page_size=PAGE_SIZE)
    files = {info.key: storage.read(info.key) for info in storage.list(layout.GALLERY)}
    shown = {c["id"] for c in page_clips(files)}
    assert shown == passed_ids(without_b) and not shown & b_ids
    assert build.removed == [layout.gallery_file_key(page_file_name(2))]  # 5 clips now: pages 0 and 1
    assert all(b"b.mp4" not in data for data in files.values())
    assert "b.mp4" not in filter_index(files)["videos"]


def test_a_clip_without_an_mp4_or_a_preview_is_shown_without_it_counted_and_listed(inbox, output, instance, tmp_path):
    """A curator looking for what went wrong wants to see such a clip, with its captions and metadata."""
    clips = curated_clips("d.mp4")
    clips[0].mp4 = None  # NeMo writes the metadata of a clip whose buffer is absent
    for window in clips[2].windows:
        window.webp = None
    write_video(inbox / "d.mp4.parquet", clips, source_video="/videos/d.mp4")
    assert materialize_partition(instance, "d.mp4", str(inbox), str(output)).success
    storage = LocalStorage(output)
    build = write_gallery(storage, index_rows(storage, ["d.mp4"]), page_size=PAGE_SIZE)
    assert (build.clips, build.without_mp4, build.without_preview) == (2, [clips[0].uuid], [clips[2].uuid])
    files = {info.key: storage.read(info.key) for info in storage.list(layout.GALLERY)}
    tiles = {clip["id"]: clip for clip in page_clips(files)}
    assert tiles[clips[0].uuid]["f"] is None and tiles[clips[0].uuid]["p"] == f"../previews/{clips[0].uuid}/0_4.webp"
    assert tiles[clips[2].uuid]["p"] is None and tiles[clips[2].uuid]["f"] == f"../clips/{clips[2].uuid}.mp4"
    assert [text for _, text in tiles[clips[0].uuid]["c"]] == [t for w in clips[0].windows for t in w.captions.values()]
    index = filter_index(files)
    assert (index["clipsWithoutMp4"], index["clipsWithoutPreview"]) == (1, 1)
    assert verify_gallery(storage, index_rows(storage, ["d.mp4"])) == []
    with chromium_page(tmp_path / "chromium-profile", {"width": 1280, "height": 900}) as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((output / layout.gallery_page_key()).as_uri())
        wait_ready(page)
        without_mp4 = page.locator(f"figure.clip[data-clip-id='{clips[0].uuid}']")
        assert without_mp4.locator("a.mp4").count() == 0 and without_mp4.locator(".no-mp4").text_content() == "no MP4"
        assert TOPICS["d.mp4"] in without_mp4.text_content() and without_mp4.locator("img.preview").count() == 1
        without_preview = page.locator(f"figure.clip[data-clip-id='{clips[2].uuid}']")
        assert without_preview.locator(".no-preview").text_content() == "no preview"
        assert without_preview.locator("a.mp4").get_attribute("href") == f"../clips/{clips[2].uuid}.mp4"
        assert errors == []


def test_verify_gallery_names_a_tampered_missing_or_extra_page_and_a_count_that_differs(gallery, output):
    storage, rows, _ = gallery
    assert verify_gallery(storage, rows) == []
    page = output / layout.gallery_file_key(page_file_name(1))
    original = page.read_bytes()
    page.write_bytes(original.replace(b"take", b"tale", 1))  # the same size, one word changed
    assert verify_gallery(storage, rows) == [
        f"{output}/gallery/page-00001.js is not what the clip index makes (changed since it was written, or the "
        "index changed: materialize clip_gallery)"
    ]
    page.unlink()
    assert verify_gallery(storage, rows) == [f"{output}/gallery/page-00001.js is missing"]
    page.write_bytes(original)
    extra = output / layout.gallery_file_key(page_file_name(7))
    extra.write_bytes(original)
    assert verify_gallery(storage, rows) == [f"{output}/gallery/page-00007.js is a page past the last"]
    extra.unlink()
    fewer = rows.filter(pa.compute.not_equal(rows.column(clip_index.PARTITION_KEY), "a.mp4"))
    problems = verify_gallery(storage, fewer)
    assert problems[0] == "the gallery shows 8 clips, the index has 6 passed clips" and len(problems) > 1


def test_gallery_files_are_the_same_bytes_for_the_same_rows(gallery):
    _, rows, _ = gallery
    assert gallery_files(rows, PAGE_SIZE) == gallery_files(rows.take(list(reversed(range(rows.num_rows)))), PAGE_SIZE)


def visible_ids(page) -> list[str]:
    return page.locator("figure.clip").evaluate_all("nodes => nodes.map(n => n.dataset.clipId)")


def wait_ready(page) -> None:
    page.wait_for_function("document.body.dataset.state === 'ready'")


def previews_decoded(page) -> list[int]:
    """Each visible tile's preview width once loaded (scrolled into view first: the images are lazy)."""
    images = page.locator("figure.clip img.preview")
    widths = []
    for position in range(images.count()):
        image = images.nth(position)
        image.scroll_into_view_if_needed()
        page.wait_for_function("image => image.complete", arg=image.element_handle())
        widths.append(image.evaluate("image => image.naturalWidth"))
    return widths


def apply(page, text: str = "", min_aesthetic: str = "") -> list[str]:
    page.fill("#text", text)
    page.fill("#min-aesthetic", min_aesthetic)
    page.click("#apply")
    wait_ready(page)
    return visible_ids(page)


def browse(page, url: str, rows, screenshots: Path, name: str) -> None:
    """What a curator does: look at every page, then filter by caption words, score and video."""
    by_id = {row[clip_index.CLIP_ID]: row for row in rows.to_pylist() if row[clip_index.PASSED]}
    page.goto(url)
    wait_ready(page)
    assert page.locator("#status").text_content() == "Page 1 of 3 · clips 1-3 of 8"
    assert page.locator("img.preview").first.get_attribute("loading") == "lazy"
    seen = []
    for number, count in enumerate([3, 3, 2]):
        ids = visible_ids(page)
        assert len(ids) == count
        assert previews_decoded(page) == [32] * count  # the animated WebP previews (32x24), decoded
        seen += ids
        page.screenshot(path=screenshots / f"{name}-page-{number + 1}.png", full_page=True)
        if number < 2:
            page.click("#next")
            page.wait_for_function(f"document.getElementById('status').textContent.startsWith('Page {number + 2} ')")
            wait_ready(page)
    assert page.locator("#next").is_disabled() and sorted(seen) == sorted(by_id)

    # A fresh page: the first page is loaded, then a caption filter loads only the pages that may match.
    page.reload()
    wait_ready(page)
    trams = apply(page, "TRAM")
    assert sorted(trams) == sorted(c for c, row in by_id.items() if row[clip_index.PARTITION_KEY] == "d.mp4")
    assert len(trams) == 2 and page.evaluate("clipGallery.stats().pagesLoaded") == 2
    assert page.locator("#status").text_content() == "Matches 1-2 of 2 · 1 of 1 pages that may match read (of 3)"
    assert previews_decoded(page) == [32, 32]
    page.screenshot(path=screenshots / f"{name}-filter-tram.png", full_page=True)

    (only,) = apply(page, "harbour take 2")
    assert by_id[only][clip_index.PARTITION_KEY] == "b.mp4" and "take 2" in by_id[only][clip_index.CAPTION]
    assert apply(page, "harbour cyclist") == []
    assert page.locator("#status").text_content().startswith("Matches none of 0")

    high = apply(page, min_aesthetic="4.25")
    assert high and sorted(high) == sorted(c for c, row in by_id.items() if row[clip_index.AESTHETIC_SCORE] >= 4.25)
    assert len(high) < len(by_id)

    page.click("#clear")
    wait_ready(page)
    page.select_option("#video", label="a.mp4")
    wait_ready(page)
    cyclists = visible_ids(page)
    assert sorted(cyclists) == sorted(c for c, row in by_id.items() if row[clip_index.PARTITION_KEY] == "a.mp4")
    assert TOPICS["a.mp4"] in page.locator("figure.clip").first.text_content()
    page.screenshot(path=screenshots / f"{name}-filter-video.png", full_page=True)


def test_in_chromium_from_disk(gallery, output, tmp_path):
    _, rows, _ = gallery
    screenshots = screenshot_folder(tmp_path)
    with chromium_page(tmp_path / "chromium-profile", {"width": 1280, "height": 900}) as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        browse(page, (output / layout.gallery_page_key()).as_uri(), rows, screenshots, "disk")
        href = page.locator("figure.clip a.mp4").first.get_attribute("href")
        assert href is not None and (output / "gallery" / href).resolve().is_file()
        assert errors == []
    assert (screenshots / "disk-filter-tram.png").stat().st_size > 0


def test_in_chromium_served_from_s3(s3, tmp_path, instance):
    """The output root on the S3 endpoint, the gallery read over plain HTTP as a static website would serve it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    root = s3.url("out")
    write_videos(instance, inbox, root, VIDEOS, s3=s3.connection)
    storage = s3.storage("out")
    rows = index_rows(storage, VIDEOS)
    write_gallery(storage, rows, page_size=PAGE_SIZE)
    s3.proxy.reset_counts()
    assert write_gallery(storage, rows, page_size=PAGE_SIZE).written == []
    # Compared by the sha256 each object carries (HEAD), never read or written again; the lock's object aside.
    gallery_requests = [r.operation for r in s3.proxy.requests if "/gallery/" in r.path]
    assert gallery_requests and set(gallery_requests) <= {"HeadObject", "ListObjects"}
    # What a static website bucket is given: anonymous reads of the output root.
    public_read = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{s3.bucket}/out/*",
            }
        ],
    }
    s3.client.put_bucket_policy(Bucket=s3.bucket, Policy=json.dumps(public_read))
    head = s3.client.head_object(Bucket=s3.bucket, Key=f"out/{layout.gallery_page_key()}")
    assert head["ContentType"].startswith("text/html")
    screenshots = screenshot_folder(tmp_path)
    with chromium_page(tmp_path / "chromium-profile", {"width": 1280, "height": 900}) as page:
        responses: list[tuple[int, str]] = []
        page.on("response", lambda response: responses.append((response.status, response.url)))
        browse(page, f"{s3.proxy.url}/{s3.bucket}/out/{layout.gallery_page_key()}", rows, screenshots, "s3")
        assert [(s, u) for s, u in responses if s not in (200, 304)] == []  # 304: the reload revalidates
        assert any(url.endswith(".webp") for _, url in responses)


SCALE = 100_000
RARE = {5: "zebra", 50_000: "zebra", SCALE - 10: "zebra"}  # a word three clips' captions have


def synthetic_rows(count: int, output: Path) -> pa.Table:
    """Index rows of `count` passed clips in videos of 20, captions from a 2,000-word vocabulary. The first
    page's clips have previews of their own under `output`; all later ones share one (what is looked at
    here is the gallery, not the tree)."""
    shared = layout.preview_key("00000000-0000-4000-8000-000000000000", 0, 4)
    rng = random.Random(7)
    vocabulary = [f"word{n}" for n in range(2000)]
    rows = []
    for n in range(count):
        clip_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        words = [rng.choice(vocabulary) for _ in range(10)] + ([RARE[n]] if n in RARE else [])
        preview = layout.preview_key(clip_id, 0, 4) if n < PAGE_SIZE_DEFAULT else shared
        if n <= PAGE_SIZE_DEFAULT:
            (output / preview).parent.mkdir(parents=True, exist_ok=True)
            (output / preview).write_bytes(tiny_webp(n % 7))
        rows.append(
            {
                clip_index.CLIP_ID: clip_id,
                clip_index.PARTITION_KEY: f"cam{n // 20 % 40}/video{n // 20:05d}.mp4",
                clip_index.PASSED: True,
                clip_index.SPAN_START: (n % 20) * 2.0,
                clip_index.DURATION: 2.0,
                clip_index.AESTHETIC_SCORE: round(rng.uniform(3, 6), 2),
                clip_index.MOTION_SCORE: round(rng.uniform(0, 5), 2),
                clip_index.CAPTIONS: [{"start_frame": 0, "end_frame": 48, "model": "qwen", "text": " ".join(words)}],
                clip_index.ENHANCED_CAPTIONS: [],
                clip_index.PREVIEW_KEYS: [preview],
                clip_index.MP4_KEY: layout.clip_key(clip_id, filtered=False),
                clip_index.METADATA_KEY: layout.clip_metadata_key(clip_id),
            }
        )
    return pa.Table.from_pylist(rows)


def test_in_chromium_at_a_hundred_thousand_clips_only_what_is_needed_loads(tmp_path):
    output = tmp_path / "output"
    rows = synthetic_rows(SCALE, output)
    build = write_gallery(LocalStorage(output), rows)
    pages = build.pages
    assert build.clips == SCALE and pages == -(-SCALE // PAGE_SIZE_DEFAULT)
    index_bytes = (output / layout.gallery_file_key("filter.js")).stat().st_size
    assert index_bytes < 40 * SCALE  # a few dozen bytes a clip, far less than the pages (~400 bytes a clip)
    screenshots = screenshot_folder(tmp_path)
    # One column of tiles, so the page is far longer than Chromium's lazy-loading distance (up to 8000 px).
    with chromium_page(tmp_path / "chromium-profile", {"width": 420, "height": 900}) as page:
        page.goto((output / layout.gallery_page_key()).as_uri())
        wait_ready(page)
        assert page.locator("#status").text_content() == f"Page 1 of {pages} · clips 1-120 of {SCALE}"
        assert page.evaluate("clipGallery.stats().pagesLoaded") == 1
        images = page.locator("figure.clip img.preview")
        assert images.count() == 120
        page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=images.first.element_handle())
        assert images.last.evaluate("image => image.naturalWidth") == 0  # far below the fold: not loaded (lazy)
        images.last.scroll_into_view_if_needed()
        page.wait_for_function("image => image.complete && image.naturalWidth > 0", arg=images.last.element_handle())
        page.screenshot(path=screenshots / "scale-page-1.png")

        for _ in range(2):  # paging reads one page file per screen
            page.click("#next")
            wait_ready(page)
        assert page.evaluate("clipGallery.stats().pagesLoaded") == 3

        zebras = apply(page, "zebra")
        status = page.locator("#status").text_content()
        read = int(re.search(r"· (\d+) of \d+ pages that may match", status).group(1))
        assert len(zebras) == 3 and status.startswith("Matches 1-3 of 3 · ")
        assert read < 20 and page.evaluate("clipGallery.stats().pagesLoaded") <= 3 + read  # not the 834 pages
        page.screenshot(path=screenshots / "scale-filter-zebra.png")

        page.click("#clear")
        wait_ready(page)
        before = page.evaluate("clipGallery.stats().pagesLoaded")
        page.select_option("#video", label="cam1/video02001.mp4")
        wait_ready(page)
        assert len(visible_ids(page)) == 20
        assert page.evaluate("clipGallery.stats().pagesLoaded") - before <= 2  # a video is a run of pages


def test_before_any_clip_the_gallery_says_so(tmp_path):
    storage = LocalStorage(tmp_path / "output")
    build = write_gallery(storage, clip_index.clip_index_schema().empty_table())
    assert (build.clips, build.pages) == (0, 0)
    assert sorted(info.key for info in storage.list(layout.GALLERY)) == [
        "gallery/filter.js",
        "gallery/gallery.css",
        "gallery/gallery.js",
        "gallery/index.html",
    ]
    with chromium_page(tmp_path / "chromium-profile", {"width": 800, "height": 600}) as page:
        page.goto((tmp_path / "output" / layout.gallery_page_key()).as_uri())
        wait_ready(page)
        assert page.locator("#status").text_content() == "No passed clips yet."
        assert page.locator("#next").is_disabled() and visible_ids(page) == []
