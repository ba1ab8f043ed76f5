"""Property tests of the rules that turn input text into output paths (red team for issue 5).

For arbitrary text, including the tricky alphabets (`..`, absolute paths, NUL, backslashes, URL
schemes, percent escapes, fullwidth dots and solidus, dot leaders, bidi and zero-width characters,
C0 and C1 controls) as source_video / input_path / partition keys / clip ids / algorithm names: the
layout function either refuses (LayoutError, ValueError, ProcessedVideoError), or the key it returns
passes `check_key`, stays below the root when joined and normalized, holds no NUL, backslash or
control character, survives Unicode normalization, and distinct inputs give distinct keys.

Each test counts the examples it tried and records them in the reliability ledger after its
assertions held. Examples are not stored (`database=None`): the repository stays untouched.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
import uuid
from collections import Counter
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from clip_assets import layout
from clip_assets.contract import ProcessedVideoError
from clip_assets.contract.identity import canonical_uuid
from clip_assets.contract.partition_keys import decode_partition_key, encode_partition_key
from clip_assets.engine.inbox import find_inbox_file
from clip_assets.storage import LocalStorage, ObjectInfo
from clip_assets.storage.keys import check_key

T = TypeVar("T")
ROOT = "/srv/clip-output"
REFUSALS = (layout.LayoutError, ValueError, ProcessedVideoError)
PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Characters that have broken path handling somewhere: separators, dots, escapes, controls (C0, DEL, C1),
# characters NFKC folds into `.`, `..`, `/` or `\` (fullwidth, dot leaders), bidi and zero-width marks.
TRICKY = "a/.\\\x00%2eEF:~ \t\x01\x1f\x7f\x85\x9b\u2024\u2025\uff0e\uff0f\uff3c\u202e\u200b\u200d\ufeff\u00e9"
SEGMENTS = [
    "", ".", "..", "a", "b.mp4", "videos", "videos2", "%2e%2e", "%2E%2E", "%2F", "s3:", "file:", "c:", "~",
    "\uff0e\uff0e", "\uff0e", "\u2025", "\u2024\u2024", "a\uff0f..\uff0f..", "..\uff3c..", ".\u200b.", "\u202egpj.mp4",
]  # fmt: skip
ROOTS = ["", "/", "/videos", "/videos/", "videos", "s3://bucket/videos", "s3://bucket", "file:///videos"]


def path_texts() -> st.SearchStrategy[str]:
    segments = st.lists(st.one_of(st.sampled_from(SEGMENTS), st.text(TRICKY, max_size=4)), max_size=6)
    prefixes = st.sampled_from(["", "/", "//", "/videos/", "s3://", "s3://bucket/videos/", "file://", "%2F"])
    return st.one_of(
        st.text(TRICKY, max_size=24),
        st.tuples(prefixes, segments).map(lambda parts: parts[0] + "/".join(parts[1])),
        st.text(max_size=24),
    )


def weighted(usual: st.SearchStrategy[T], rare: st.SearchStrategy[T], one_in: int) -> st.SearchStrategy[T]:
    """`rare` for about one example in `one_in`, `usual` otherwise (`one_of` would draw them evenly)."""
    return st.integers(1, one_in).flatmap(lambda draw: rare if draw == 1 else usual)


# What a path segment may hold and still be accepted, while being as hostile as that allows: percent
# escapes of dots and slashes, dot runs inside a name, a single dot leader, drive letters and home
# tildes, bidi overrides, zero-width and BOM characters, spaces, accents.
LEGAL_BUT_HOSTILE = "a.%2eEF:~ \u2024\u202e\u200b\u200d\ufeff\u00e9"
ACCEPTED_ROOTS = ["/videos", "/videos/", "s3://bucket/videos", "s3://bucket", ""]


def video_under_root() -> st.SearchStrategy[tuple[str, str]]:
    """(source_video, input_path) with the video below the root: most are accepted, so the safety
    assertions run on them; one segment in twelve comes from the refused alphabet (`..`, controls,
    fullwidth separators) so refusal of the truly unsafe stays exercised in the same property."""
    segment = weighted(
        st.text(LEGAL_BUT_HOSTILE, min_size=1, max_size=8),
        st.one_of(st.sampled_from(SEGMENTS), st.text(TRICKY, min_size=1, max_size=4)),
        one_in=12,
    )

    def joined(parts: tuple[str, list[str]]) -> tuple[str, str]:
        root, segments = parts
        return f"{root.rstrip('/')}/" + "/".join(segments), root

    return st.tuples(st.sampled_from(ACCEPTED_ROOTS), st.lists(segment, min_size=1, max_size=4)).map(joined)


def video_paths() -> st.SearchStrategy[tuple[str, str]]:
    """Mostly videos below a root (they reach the assertions), and arbitrary pairs of text as well."""
    anything = st.tuples(path_texts(), st.one_of(st.sampled_from(ROOTS), path_texts()))
    return weighted(video_under_root(), anything, one_in=4)


def is_control(ch: str) -> bool:
    return unicodedata.category(ch) == "Cc"


def assert_inside_root(key: str) -> None:
    """The key as every consumer would join it: os.path and posixpath, normalized, stays below ROOT."""
    for join, normalize in ((os.path.join, os.path.normpath), (posixpath.join, posixpath.normpath)):
        joined = normalize(join(ROOT, key))
        assert joined.startswith(ROOT + "/"), (key, joined)
    assert ".." not in Path(key).parts and not Path(key).is_absolute(), key


def assert_safe_key(key: str) -> None:
    assert check_key(key) == key
    assert_inside_root(key)
    assert "\x00" not in key and "\\" not in key, key


class Tally:
    """Examples tried per test, for the ledger (Hypothesis runs the inner function once per example)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, outcome: str) -> None:
        self.counts[outcome] += 1
        event(outcome)  # shown per test by `pytest --hypothesis-show-statistics`

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def assert_reached(self, outcome: str, share: float) -> None:
        """A property whose examples are mostly refused before its assertion proves little: at least
        `share` of them must have had `outcome` (and so reached the assertions)."""
        assert self.counts[outcome] >= share * self.total, dict(self.counts)


def record(reliability, kind: str, tally: Tally, how: str) -> None:
    reliability.record("bad input", kind, tried=tally.total, handled=tally.total, nothing_lost=how)


# --------------------------------------------------------------------------------------------------
# source_video / input_path -> processed_videos/{rel}.json, processed_clip_chunks/{rel}_{chunk}.json


def video_keys(source_video: str, input_path: str) -> list[str] | None:
    try:
        relative = layout.video_relative_path(source_video, input_path)
    except REFUSALS:
        return None
    return [
        layout.video_metadata_key(relative),
        layout.chunk_stats_key(relative, 0),
        layout.chunk_stats_key(relative, 7),
    ]


def test_accepted_video_paths_stay_below_the_root(reliability):
    tally = Tally()

    @PROPERTY
    @given(video_paths())
    @example(("/videos/../../etc/passwd", "/videos"))
    @example(("s3://evil/../x", ""))
    @example(("/videos/a/../../b", "/videos"))
    @example(("/videos2/x", "/videos"))
    def check(paths: tuple[str, str]) -> None:
        source_video, input_path = paths
        keys = video_keys(source_video, input_path)
        tally("refused" if keys is None else "accepted")
        for key in keys or []:
            assert_safe_key(key)
            assert key.startswith(("processed_videos/", "processed_clip_chunks/")), key

    check()
    tally.assert_reached("accepted", 0.5)
    record(
        reliability,
        "property: source_video and input_path stay below the root",
        tally,
        "check_key, os.path and posixpath joins",
    )


def test_accepted_video_paths_hold_no_control_character(reliability):
    """C1 controls (U+0080-U+009F, e.g. NEL U+0085, CSI U+009B) are control characters too."""
    tally = Tally()

    @PROPERTY
    @given(video_paths())
    @example(("/videos/a\x85b.mp4", "/videos"))
    def check(paths: tuple[str, str]) -> None:
        keys = video_keys(*paths)
        tally("refused" if keys is None else "accepted")
        for key in keys or []:
            assert not any(is_control(ch) for ch in key), repr(key)

    check()
    tally.assert_reached("accepted", 0.5)
    record(reliability, "property: no control character in video output paths", tally, "unicodedata category Cc")


def test_accepted_video_paths_survive_unicode_normalization(reliability):
    """NFKC folds U+FF0E into `.`, U+2025 into `..`, U+FF0F into `/`: a consumer that normalizes must not escape."""
    tally = Tally()

    @PROPERTY
    @given(video_paths())
    @example(("/videos/\uff0e\uff0e/\uff0e\uff0e/etc/passwd", "/videos"))
    def check(paths: tuple[str, str]) -> None:
        keys = video_keys(*paths)
        tally("refused" if keys is None else "accepted")
        for key in keys or []:
            normalized = unicodedata.normalize("NFKC", key)
            assert_safe_key(normalized)

    check()
    tally.assert_reached("accepted", 0.5)
    record(reliability, "property: video output paths survive NFKC normalization", tally, "NFKC form passes check_key")


SAFE_SEGMENT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"), min_size=1, max_size=6
).filter(lambda s: s not in (".", ".."))


def test_input_path_matches_whole_segments_and_distinct_videos_get_distinct_paths(reliability):
    tally = Tally()

    @PROPERTY
    @given(
        st.lists(SAFE_SEGMENT, max_size=3),
        st.lists(SAFE_SEGMENT, min_size=1, max_size=4),
        st.lists(SAFE_SEGMENT, min_size=1, max_size=4),
    )
    @example(["videos"], ["videos2", "x"], ["videos", "x"])
    def check(prefix: list[str], video_a: list[str], video_b: list[str]) -> None:
        tally("tried")
        input_path = "/" + "/".join(prefix)
        results = []
        for segments in (video_a, video_b):
            under = segments[: len(prefix)] == prefix and len(segments) > len(prefix)
            try:
                relative = layout.video_relative_path("/" + "/".join(segments), input_path)
            except layout.LayoutError:
                assert not under, (segments, prefix)
                results.append(None)
                continue
            assert under, (segments, prefix)
            assert relative == "/".join(segments[len(prefix) :])
            results.append(relative)
        if None not in results and video_a != video_b:
            keys_a = {layout.video_metadata_key(results[0]), *(layout.chunk_stats_key(results[0], c) for c in range(3))}
            keys_b = {layout.video_metadata_key(results[1]), *(layout.chunk_stats_key(results[1], c) for c in range(3))}
            assert not keys_a & keys_b, (video_a, video_b)

    check()
    record(
        reliability,
        "property: input_path by segment, distinct videos distinct paths",
        tally,
        "segment-prefix oracle; key sets disjoint",
    )


def test_chunk_keys_are_injective_over_video_and_chunk(reliability):
    tally = Tally()

    @PROPERTY
    @given(
        st.lists(SAFE_SEGMENT, min_size=1, max_size=3),
        st.integers(0, 10**6),
        st.lists(SAFE_SEGMENT, min_size=1, max_size=3),
        st.integers(0, 10**6),
    )
    @example(["a_1"], 2, ["a"], 12)
    def check(video_a: list[str], chunk_a: int, video_b: list[str], chunk_b: int) -> None:
        tally("tried")
        rel_a, rel_b = "/".join(video_a), "/".join(video_b)
        if (rel_a, chunk_a) != (rel_b, chunk_b):
            assert layout.chunk_stats_key(rel_a, chunk_a) != layout.chunk_stats_key(rel_b, chunk_b)
        source_a, source_b = f"/videos/{rel_a}", f"/videos/{rel_b}"
        if (source_a, chunk_a) != (source_b, chunk_b):
            assert layout.chunk_embedding_key("cosmos-embed1", source_a, chunk_a) != layout.chunk_embedding_key(
                "cosmos-embed1", source_b, chunk_b
            )

    check()
    record(reliability, "property: chunk indices never alias another chunk or video", tally, "pairwise key inequality")


def test_no_video_output_path_is_a_folder_of_another_videos_file(reliability):
    """processed_videos/a.mp4.json (a file) and processed_videos/a.mp4.json/b.json cannot both exist on a disk."""
    tally = Tally()
    segment = st.sampled_from(["a.mp4", "a.mp4.json", "a.mp4_0.json", "b", "b.json"])

    @PROPERTY
    @given(st.lists(segment, min_size=1, max_size=3), st.lists(segment, min_size=1, max_size=3))
    @example(["a.mp4"], ["a.mp4.json", "b"])
    def check(video_a: list[str], video_b: list[str]) -> None:
        tally("tried")
        if video_a == video_b:
            return
        keys_a = video_keys("/videos/" + "/".join(video_a), "/videos") or []
        keys_b = video_keys("/videos/" + "/".join(video_b), "/videos") or []
        for file_key in keys_a:
            for other in keys_b:
                assert not other.startswith(file_key + "/"), (file_key, other)
                assert not file_key.startswith(other + "/"), (other, file_key)

    check()
    record(
        reliability,
        "property: one video's output file is never another's folder",
        tally,
        "no key is a path prefix of another",
    )


# --------------------------------------------------------------------------------------------------
# Partition keys <-> inbox-relative paths

KEY_TEXT = st.one_of(
    st.text(TRICKY + "%0123456789ABCDEFabcdef-", max_size=20),
    st.lists(
        st.sampled_from(["%2E", "%2F", "%25", "%00", "%5C", "%FF", "%2e", ".", "/", "a", "-", "%2D", "%61"]), max_size=8
    ).map("".join),
)


def test_partition_keys_round_trip_and_never_share_a_file(reliability):
    tally = Tally()

    @PROPERTY
    @given(st.text(TRICKY, min_size=1), st.text(TRICKY, min_size=1))
    def check(path_a: str, path_b: str) -> None:
        tally("tried")
        key_a, key_b = encode_partition_key(path_a + ".parquet"), encode_partition_key(path_b + ".parquet")
        assert decode_partition_key(key_a) == path_a + ".parquet"
        assert (key_a == key_b) == (path_a == path_b)
        assert "..." not in key_a and not any(is_control(ch) and ord(ch) < 128 for ch in key_a)

    check()
    record(
        reliability,
        "property: partition keys reversible and injective",
        tally,
        "decode(encode(p)) == p; distinct paths distinct keys",
    )


class StatAnything:
    """An inbox where every key exists: shows which file a partition key would open."""

    root = "/srv/inbox"

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, 1, 1)


def test_a_partition_key_names_one_safe_inbox_file_and_only_its_own(reliability):
    """Accepted keys open a file below the inbox, and only the file whose own key they are (no aliases)."""
    tally = Tally()

    @PROPERTY
    @given(KEY_TEXT)
    @example("good-a%2Emp4")
    @example("%2E%2E/x")
    def check(partition_key: str) -> None:
        try:
            file = find_inbox_file(StatAnything(), partition_key)  # type: ignore[arg-type]
        except ProcessedVideoError:
            tally("refused")
            return
        tally("accepted")
        assert_inside_root(file.key)
        assert check_key(file.key) == file.key
        assert encode_partition_key(file.key) == partition_key, (partition_key, file.key)

    check()
    record(
        reliability,
        "property: partition key names one safe inbox file",
        tally,
        "inbox key below root; canonical key only",
    )


def test_any_partition_key_fails_as_a_processed_video_error(tmp_path, reliability):
    """Whatever a key names (a file used as a folder, a name too long), it is refused by name, not by OSError."""
    (tmp_path / "a.mp4.parquet").write_bytes(b"PAR1")
    storage = LocalStorage(tmp_path)
    tally = Tally()

    @PROPERTY
    @given(st.one_of(KEY_TEXT, st.text("y", min_size=250, max_size=300)))
    @example("a.mp4.parquet/x")
    @example("y" * 300)
    def check(partition_key: str) -> None:
        try:
            find_inbox_file(storage, partition_key)
            tally("found")
        except ProcessedVideoError:
            tally("refused")

    check()
    record(
        reliability,
        "property: any partition key fails its partition by name",
        tally,
        "only ProcessedVideoError escapes",
    )


# --------------------------------------------------------------------------------------------------
# Clip ids, window frames, algorithm names

UUID_TEXT = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex.upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.uuids().map(lambda u: f"urn:uuid:{u}"),
    st.uuids().map(lambda u: f"{u}/../../x"),
    st.uuids().map(lambda u: str(u).translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789abcdef"})),
    st.text(TRICKY + "0123456789abcdef-", max_size=40),
)


# Only `str(uuid.UUID(...))`'s own spelling is a clip id; the shape is checked first so that the oracle is
# Python's uuid module, not layout's regular expression.
CANONICAL_UUID_SHAPE = re.compile(r"[0-9a-f-]{36}")


def clip_keys(clip_id: str) -> list[str]:
    return [
        layout.clip_key(clip_id, filtered=False),
        layout.clip_key(clip_id, filtered=True),
        layout.preview_key(clip_id, 0, 8),
        layout.clip_metadata_key(clip_id),
        layout.embedding_pickle_key("cosmos-embed1", clip_id),
    ]


def test_clip_ids_from_input_become_safe_distinct_keys(reliability):
    """The reader's path: canonical_uuid refuses what is not a UUID; what it accepts makes safe, distinct keys."""
    tally = Tally()

    @PROPERTY
    @given(UUID_TEXT, UUID_TEXT, st.integers(0, 2**40), st.integers(0, 2**40))
    def check(text_a: str, text_b: str, start: int, length: int) -> None:
        try:
            id_a, id_b = canonical_uuid(text_a), canonical_uuid(text_b)
        except ValueError:
            tally("refused")
            return
        tally("accepted")
        keys_a, keys_b = clip_keys(id_a), clip_keys(id_b)
        for key in keys_a:
            assert_safe_key(key)
        assert len(set(keys_a)) == len(keys_a)
        assert (id_a == id_b) == (text_a.lower().replace("-", "") == text_b.lower().replace("-", ""))
        if id_a != id_b:
            assert not set(keys_a) & set(keys_b)
        preview = layout.preview_key(id_a, start, start + length)
        assert_safe_key(preview)
        if length:
            assert preview != layout.preview_key(id_a, start + 1, start + length)

    check()
    record(
        reliability,
        "property: clip ids and window frames make safe distinct keys",
        tally,
        "canonical_uuid then layout keys",
    )


def test_layout_refuses_clip_ids_that_are_not_uuids(reliability):
    """layout's promise ("every function returns a key ... that cannot escape"), without relying on its callers."""
    tally = Tally()

    @PROPERTY
    @given(UUID_TEXT)
    @example("../../etc/passwd")
    def check(clip_id: str) -> None:
        canonical = clip_id == str(uuid.UUID(clip_id)) if CANONICAL_UUID_SHAPE.fullmatch(clip_id) else False
        try:
            keys = clip_keys(clip_id)
        except REFUSALS:
            tally("refused")
            assert not canonical, clip_id  # refusing a canonical id would lose a clip
            return
        tally("accepted")
        assert canonical, clip_id  # anything else (braces, URN, uppercase, fullwidth digits, a path) is refused
        for key in keys:
            assert_safe_key(key)

    check()
    record(
        reliability, "property: layout refuses clip ids that are not UUIDs", tally, "every clip key passes check_key"
    )


ALGORITHMS = st.one_of(
    st.text(TRICKY + "-_cosmembdintrvo12CEIV", max_size=16),
    st.sampled_from(["cosmos-embed1", "internvideo2", "ce1", "CE1", "iv2", "ce1!", "a-b", "a_b", "A B", "../../x"]),
    st.text(max_size=12),
)
# Names that are accepted and still hostile, so most examples reach the assertions: NeMo's names with
# anything after them (a separator, `..`, NUL), and plain folder names close to NeMo's prefixes.
ACCEPTED_ALGORITHMS = st.one_of(
    st.tuples(st.sampled_from(["cosmos-embed1", "internvideo2"]), st.text(TRICKY, max_size=8)).map("".join),
    st.text("-_ce1iv2abz09", min_size=1, max_size=12).filter(lambda name: name[0] not in "-_"),
)
MOSTLY_ACCEPTED_ALGORITHMS = weighted(ACCEPTED_ALGORITHMS, ALGORITHMS, one_in=6)


def test_embedding_prefixes_are_safe(reliability):
    tally = Tally()

    @PROPERTY
    @given(MOSTLY_ACCEPTED_ALGORITHMS, st.uuids().map(str))
    def check(algorithm: str, clip_id: str) -> None:
        try:
            keys = [
                layout.embedding_pickle_key(algorithm, clip_id),
                layout.chunk_embedding_key(algorithm, "/videos/a.mp4", 0),
            ]
        except REFUSALS:
            tally("refused")
            return
        tally("accepted")
        for key in keys:
            assert_safe_key(key)
            assert key.count("/") == 1, key

    check()
    tally.assert_reached("accepted", 0.5)
    record(reliability, "property: embedding algorithm names make safe folders", tally, "check_key, one folder level")


def nemo_family(algorithm: str) -> str | None:
    return next(
        (p for name, p in (("cosmos-embed1", "ce1"), ("internvideo2", "iv2")) if algorithm.startswith(name)), None
    )


def test_an_embedding_is_never_filed_under_a_model_it_does_not_come_from(reliability):
    """docs/outputs.md: other algorithms get a slug of their name, 'so an embedding is never filed under a model it
    does not come from'; and two different algorithms never share a folder."""
    tally = Tally()

    @PROPERTY
    @given(MOSTLY_ACCEPTED_ALGORITHMS, MOSTLY_ACCEPTED_ALGORITHMS)
    @example("ce1", "cosmos-embed1")
    @example("a-b", "a_b")
    def check(algorithm_a: str, algorithm_b: str) -> None:
        try:
            prefix_a, prefix_b = layout.embedding_prefix(algorithm_a), layout.embedding_prefix(algorithm_b)
        except REFUSALS:
            tally("refused")
            return
        tally("accepted")
        family_a, family_b = nemo_family(algorithm_a), nemo_family(algorithm_b)
        if family_a is None:
            assert prefix_a not in ("ce1", "iv2"), (algorithm_a, prefix_a)
        if algorithm_a != algorithm_b and (family_a is None or family_b is None or family_a != family_b):
            assert prefix_a != prefix_b, (algorithm_a, algorithm_b, prefix_a)

    check()
    tally.assert_reached("accepted", 0.5)
    record(reliability, "property: distinct embedding algorithms never share a folder", tally, "prefix inequality")
