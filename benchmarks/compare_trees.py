"""Compare a NeMo Curator ClipWriterStage output tree with a clip-assets output tree.

The parity claim is "file for file": the same relative paths, the same media bytes, and the same
logical content in metadata, embeddings and chunk summaries. Logical, because some byte-level
differences are legitimate (JSON whitespace, pickle protocol, Parquet writer version) and some
value-level differences are deliberate fixes documented in docs (e.g. `num_frames`). This tool
reports both kinds, grouped by path pattern and key path, so a reviewer sees each difference once.

Rules (a difference makes the exit code 1; a note does not):
- files present on only one side: difference;
- `.mp4`, `.webp` and unknown extensions: byte for byte;
- `.json`: parsed values; floats equal within `math.isclose(rel_tol=1e-9)`; bool, number, string,
  list and object must match in kind; output-root prefixes in strings (NeMo's `clip_location`) are
  compared relative to each tree's output path. Int vs float of equal value, key order and text
  formatting (indent, escaping) are notes;
- `.parquet`: column names and values (`id` order exact, list-of-float columns close); Arrow
  types and schema metadata are notes;
- `.pickle`: unpickled numpy arrays; dtype, shape and values (close) must match; protocol or byte
  differences are notes. Only unpickle trees you produced yourself: pickle runs code.

Plain Python plus numpy and pyarrow, no clip_assets or dagster, so it runs in any of our venvs.

Usage:
    python benchmarks/compare_trees.py NEMO_DIR OURS_DIR [--ignore-prefix _clip_assets]
        [--nemo-output-path PATH] [--ours-output-path PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import pickle
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
VERSION_DIR_RE = re.compile(r"v\d+")
JSON_REL_TOL = 1e-9
ARRAY_RTOL = 1e-6
ARRAY_ATOL = 1e-12
MAX_EXAMPLES = 3
ROOT_TOKEN = "<output>"


@dataclass
class Finding:
    """One difference or note in one file; grouped later by (pattern, kind, key)."""

    path: str
    kind: str
    key: str
    nemo: str
    ours: str


@dataclass
class Report:
    """Everything found, split into failing differences and informational notes."""

    differences: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)

    def diff(self, path: str, kind: str, key: str, nemo: Any, ours: Any) -> None:
        self.differences.append(Finding(path, kind, key, short(nemo), short(ours)))

    def note(self, path: str, kind: str, key: str, nemo: Any, ours: Any) -> None:
        self.notes.append(Finding(path, kind, key, short(nemo), short(ours)))


def short(value: Any, limit: int = 100) -> str:
    """A one-line rendering, cut so long captions or vectors do not flood the summary."""
    text = value if isinstance(value, str) and value.startswith("<") else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pattern_of(rel: str) -> str:
    """Group key of a path: `previews/<uuid>/0_4.webp` -> `previews/*/*.webp`.

    The top folder and version folders (`metas/v0`) are kept, UUID folders become `*` and the
    video-mirroring folders of processed_videos/processed_clip_chunks collapse to `**`.
    """
    parts = rel.split("/")
    if len(parts) == 1:
        return rel
    middle: list[str] = []
    for part in parts[1:-1]:
        if VERSION_DIR_RE.fullmatch(part):
            middle.append(part)
        elif UUID_RE.fullmatch(part):
            middle.append("*")
        elif not middle or middle[-1] != "**":
            middle.append("**")
    suffix = Path(parts[-1]).suffix
    return "/".join([parts[0], *middle, f"*{suffix}"])


def list_tree(root: Path, ignore_prefixes: Sequence[str]) -> dict[str, Path]:
    """Relative POSIX path -> file, skipping ignored prefixes (e.g. clip-assets' `_clip_assets/`)."""
    files: dict[str, Path] = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if any(rel.startswith(prefix) for prefix in ignore_prefixes):
            continue
        files[rel] = path
    return files


def root_forms(output_path: str) -> list[str]:
    """Spellings of an output root that may prefix paths written into JSON, longest first."""
    forms = {output_path.rstrip("/"), str(Path(output_path)), str(Path(output_path).resolve())}
    return sorted((f for f in forms if f), key=len, reverse=True)


def strip_root(text: str, roots: Sequence[str]) -> str:
    for root in roots:
        if text.startswith(root + "/"):
            return ROOT_TOKEN + text[len(root) :]
    return text


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


class JsonComparer:
    """Walks two parsed JSON documents side by side, recording differences with their key paths."""

    def __init__(self, rel: str, report: Report, nemo_roots: Sequence[str], ours_roots: Sequence[str]) -> None:
        self.rel = rel
        self.report = report
        self.nemo_roots = nemo_roots
        self.ours_roots = ours_roots

    def compare(self, nemo: Any, ours: Any, key: str = "") -> None:
        label = key or "<root>"
        if json_kind(nemo) != json_kind(ours):
            self.report.diff(self.rel, "value", label, nemo, ours)
        elif isinstance(nemo, dict):
            self._compare_dicts(nemo, ours, key)
        elif isinstance(nemo, list):
            if len(nemo) != len(ours):
                self.report.diff(self.rel, "list length", label, len(nemo), len(ours))
            for i, (a, b) in enumerate(zip(nemo, ours, strict=False)):
                self.compare(a, b, f"{key}[{i}]")
        elif isinstance(nemo, str):
            if strip_root(nemo, self.nemo_roots) != strip_root(ours, self.ours_roots):
                self.report.diff(self.rel, "value", label, nemo, ours)
        elif isinstance(nemo, (int, float)) and not isinstance(nemo, bool):
            self._compare_numbers(nemo, ours, label)
        elif nemo != ours:
            self.report.diff(self.rel, "value", label, nemo, ours)

    def _compare_dicts(self, nemo: dict[str, Any], ours: dict[str, Any], key: str) -> None:
        for name in nemo:
            child = f"{key}.{name}" if key else name
            if name not in ours:
                self.report.diff(self.rel, "key only in nemo", child, nemo[name], "<missing>")
            else:
                self.compare(nemo[name], ours[name], child)
        for name in ours:
            if name not in nemo:
                child = f"{key}.{name}" if key else name
                self.report.diff(self.rel, "key only in ours", child, "<missing>", ours[name])
        common_nemo = [k for k in nemo if k in ours]
        common_ours = [k for k in ours if k in nemo]
        if common_nemo != common_ours:
            self.report.note(self.rel, "key order", key or "<root>", common_nemo, common_ours)

    def _compare_numbers(self, nemo: float, ours: float, label: str) -> None:
        if isinstance(nemo, float) and isinstance(ours, float) and math.isnan(nemo) and math.isnan(ours):
            return
        if not math.isclose(nemo, ours, rel_tol=JSON_REL_TOL):
            self.report.diff(self.rel, "value", label, nemo, ours)
        elif nemo != ours:
            self.report.note(self.rel, "float equal within tolerance, not exactly", label, nemo, ours)
        elif type(nemo) is not type(ours):
            self.report.note(self.rel, "int vs float", label, nemo, ours)


def json_text_style(raw: bytes) -> str:
    """How a JSON file is formatted, for the formatting note (indent, ASCII escaping, final newline)."""
    text = raw.decode("utf-8", errors="replace")
    indent_match = re.search(r"\n( +)\S", text)
    indent = len(indent_match.group(1)) if indent_match else 0
    escaped = "\\u" in text
    non_ascii = any(ord(c) > 127 for c in text)
    ascii_note = "escaped non-ASCII" if escaped else ("raw UTF-8" if non_ascii else "ASCII only")
    return f"indent={indent}, {ascii_note}, final newline={text.endswith(chr(10))}"


def compare_json(
    rel: str, nemo_raw: bytes, ours_raw: bytes, report: Report, roots: tuple[list[str], list[str]]
) -> None:
    try:
        nemo, ours = json.loads(nemo_raw), json.loads(ours_raw)
    except json.JSONDecodeError as exc:
        report.diff(rel, "unreadable json", "<file>", "<parsed>", f"<{exc}>")
        return
    JsonComparer(rel, report, *roots).compare(nemo, ours)
    nemo_style, ours_style = json_text_style(nemo_raw), json_text_style(ours_raw)
    if nemo_style != ours_style:
        report.note(rel, "json formatting", "<file>", f"<{nemo_style}>", f"<{ours_style}>")
    elif nemo_raw != ours_raw:
        report.note(rel, "json bytes", "<file>", "<differ>", "<differ>")


def compare_parquet(rel: str, nemo_raw: bytes, ours_raw: bytes, report: Report) -> None:
    try:
        nemo = pq.read_table(io.BytesIO(nemo_raw))
        ours = pq.read_table(io.BytesIO(ours_raw))
    except (pa.ArrowException, OSError) as exc:
        report.diff(rel, "unreadable parquet", "<file>", "<read>", f"<{exc}>")
        return
    if nemo.column_names != ours.column_names:
        report.diff(rel, "columns", "<schema>", nemo.column_names, ours.column_names)
    if nemo.num_rows != ours.num_rows:
        report.diff(rel, "row count", "<file>", nemo.num_rows, ours.num_rows)
    for name in nemo.column_names:
        if name not in ours.column_names:
            continue
        nemo_type, ours_type = nemo.schema.field(name).type, ours.schema.field(name).type
        if nemo_type != ours_type:
            report.note(rel, "parquet type", name, f"<{nemo_type}>", f"<{ours_type}>")
        compare_column(rel, name, nemo.column(name), ours.column(name), report)
    nemo_meta = sorted((nemo.schema.metadata or {}).keys())
    ours_meta = sorted((ours.schema.metadata or {}).keys())
    if nemo_meta != ours_meta:
        report.note(
            rel, "schema metadata keys", "<schema>", [k.decode() for k in nemo_meta], [k.decode() for k in ours_meta]
        )


def compare_column(rel: str, name: str, nemo: pa.ChunkedArray, ours: pa.ChunkedArray, report: Report) -> None:
    """List-of-float columns (embeddings) compare within tolerance; anything else exactly, in order."""
    nemo_values, ours_values = nemo.to_pylist(), ours.to_pylist()
    if is_float_list(nemo.type) and is_float_list(ours.type):
        bad = 0
        worst = 0.0
        for a, b in zip(nemo_values, ours_values, strict=False):
            if a is None or b is None or len(a) != len(b):
                bad += not (a is None and b is None)
                continue
            x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if not np.allclose(x, y, rtol=ARRAY_RTOL, atol=ARRAY_ATOL, equal_nan=True):
                bad += 1
                worst = max(worst, float(np.nanmax(np.abs(x - y))))
        if bad:
            report.diff(rel, "parquet values", name, f"<{bad} rows differ>", f"<max abs diff {worst:g}>")
    elif nemo_values != ours_values:
        if sorted(map(repr, nemo_values)) == sorted(map(repr, ours_values)):
            report.diff(rel, "parquet row order", name, nemo_values, ours_values)
        else:
            report.diff(rel, "parquet values", name, nemo_values, ours_values)


def is_float_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_floating(t.value_type)


def pickle_protocol(raw: bytes) -> int | None:
    return raw[1] if len(raw) >= 2 and raw[0] == 0x80 else None


def compare_pickle(rel: str, nemo_raw: bytes, ours_raw: bytes, report: Report) -> None:
    try:
        nemo = pickle.loads(nemo_raw)  # trees we produced ourselves
        ours = pickle.loads(ours_raw)
    except Exception as exc:  # any unpickling failure is a finding, not a crash
        report.diff(rel, "unreadable pickle", "<file>", "<loaded>", f"<{type(exc).__name__}: {exc}>")
        return
    if not isinstance(nemo, np.ndarray) or not isinstance(ours, np.ndarray):
        report.diff(rel, "pickle type", "<object>", f"<{type(nemo).__name__}>", f"<{type(ours).__name__}>")
    else:
        if nemo.dtype != ours.dtype:
            report.diff(rel, "pickle dtype", "<array>", str(nemo.dtype), str(ours.dtype))
        if nemo.shape != ours.shape:
            report.diff(rel, "pickle shape", "<array>", list(nemo.shape), list(ours.shape))
        elif not np.allclose(
            nemo.astype(np.float64), ours.astype(np.float64), rtol=ARRAY_RTOL, atol=ARRAY_ATOL, equal_nan=True
        ):
            worst = float(np.nanmax(np.abs(nemo.astype(np.float64) - ours.astype(np.float64))))
            report.diff(rel, "pickle values", "<array>", "<values>", f"<max abs diff {worst:g}>")
    nemo_protocol, ours_protocol = pickle_protocol(nemo_raw), pickle_protocol(ours_raw)
    if nemo_protocol != ours_protocol:
        report.note(rel, "pickle protocol", "<file>", nemo_protocol, ours_protocol)
    else:
        report.note(rel, "pickle bytes", "<file>", "<differ>", "<differ>")


def compare_file(rel: str, nemo: Path, ours: Path, report: Report, roots: tuple[list[str], list[str]]) -> None:
    nemo_raw, ours_raw = nemo.read_bytes(), ours.read_bytes()
    if nemo_raw == ours_raw:
        return
    suffix = Path(rel).suffix.lower()
    if suffix == ".json":
        compare_json(rel, nemo_raw, ours_raw, report, roots)
    elif suffix == ".parquet":
        compare_parquet(rel, nemo_raw, ours_raw, report)
    elif suffix == ".pickle":
        compare_pickle(rel, nemo_raw, ours_raw, report)
    else:
        report.diff(rel, "bytes", "<file>", f"<{len(nemo_raw)} bytes>", f"<{len(ours_raw)} bytes>")


def group_key_path(key: str) -> str:
    """`all_windows.<uuid>.0_4` -> `all_windows.*.0_4`, so per-clip keys group together."""
    return UUID_RE.sub("*", key)


def print_findings(title: str, findings: Iterable[Finding]) -> None:
    groups: dict[tuple[str, str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[(pattern_of(finding.path), finding.kind, group_key_path(finding.key))].append(finding)
    if not groups:
        return
    print(f"\n{title} ({sum(len(g) for g in groups.values())} in {len(groups)} groups):")
    for (pattern, kind, key), items in sorted(groups.items()):
        first = items[0]
        files = len({f.path for f in items})
        pairs = {(f.nemo, f.ours) for f in items}
        varies = "" if len(pairs) == 1 else f"; values vary, e.g. {first.path}"
        print(f"  {pattern}: {kind} {key}: nemo={first.nemo} ours={first.ours} ({files} files{varies})")


def print_only(side: str, rels: Sequence[str]) -> None:
    if not rels:
        return
    groups: dict[str, list[str]] = defaultdict(list)
    for rel in rels:
        groups[pattern_of(rel)].append(rel)
    print(f"\nonly in {side} ({len(rels)} files):")
    for pattern, items in sorted(groups.items()):
        examples = ", ".join(items[:MAX_EXAMPLES]) + (", ..." if len(items) > MAX_EXAMPLES else "")
        print(f"  {pattern}: {len(items)} files, e.g. {examples}")


def top_folder(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else "."


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nemo_dir", type=Path)
    parser.add_argument("ours_dir", type=Path)
    parser.add_argument(
        "--ignore-prefix",
        action="append",
        default=[],
        help="skip relative paths starting with this (repeatable), e.g. _clip_assets",
    )
    parser.add_argument("--nemo-output-path", help="output_path NeMo was given (default: NEMO_DIR as typed)")
    parser.add_argument(
        "--ours-output-path", help="output root clip-assets wrote into clip_location (default: OURS_DIR)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for directory in (args.nemo_dir, args.ours_dir):
        if not directory.is_dir():
            print(f"{directory} is not a directory", file=sys.stderr)
            return 2
    nemo_files = list_tree(args.nemo_dir, args.ignore_prefix)
    ours_files = list_tree(args.ours_dir, args.ignore_prefix)
    roots = (
        root_forms(args.nemo_output_path or str(args.nemo_dir)),
        root_forms(args.ours_output_path or str(args.ours_dir)),
    )
    common = sorted(nemo_files.keys() & ours_files.keys())
    only_nemo = sorted(nemo_files.keys() - ours_files.keys())
    only_ours = sorted(ours_files.keys() - nemo_files.keys())

    report = Report()
    identical = 0
    for rel in common:
        before = len(report.differences)
        compare_file(rel, nemo_files[rel], ours_files[rel], report, roots)
        identical += len(report.differences) == before

    print(f"nemo: {args.nemo_dir} ({len(nemo_files)} files)   ours: {args.ours_dir} ({len(ours_files)} files)")
    folders = sorted({top_folder(r) for r in nemo_files} | {top_folder(r) for r in ours_files})
    for folder in folders:
        n = sum(top_folder(r) == folder for r in nemo_files)
        o = sum(top_folder(r) == folder for r in ours_files)
        print(f"  {folder:<24} nemo={n:<6} ours={o:<6}{'' if n == o else '  <- count differs'}")
    print(f"common files: {len(common)}, equal by the rules: {identical}")
    print_only("nemo", only_nemo)
    print_only("ours", only_ours)
    print_findings("differences", report.differences)
    print_findings("notes (do not fail)", report.notes)
    same = not (only_nemo or only_ours or report.differences)
    print(f"\nresult: {'IDENTICAL by the rules' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
