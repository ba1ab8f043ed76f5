"""A video's annotation: what a person (or an upstream labelling tool) says about it, next to the video file.

`street walk.mp4.annotation.json` beside `street walk.mp4`:

    {"caption": "Colour bars scroll left over a grey ramp.", "aesthetic_score": 4.2}

The ingest gives every passed clip of the video that caption (caption model `annotation`, on each of its
windows) and that aesthetic score, under the names NeMo's writer uses, so the clip index, its SQL and
the gallery's caption and score filters work on clip-assets' own data. Nothing is invented: a video
without an annotation file gets no caption and no score.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".annotation.json"
CAPTION_MODEL = "annotation"


class AnnotationError(ValueError):
    """An annotation file that is not what this module reads; names the file and the field."""


@dataclass(frozen=True)
class Annotation:
    caption: str | None = None
    aesthetic_score: float | None = None

    def to_json(self) -> str:
        document = {"caption": self.caption, "aesthetic_score": self.aesthetic_score}
        return json.dumps({key: value for key, value in document.items() if value is not None}, indent=1)


def annotation_path(video: Path) -> Path:
    return video.with_name(video.name + SUFFIX)


def read_annotation(video: Path) -> Annotation | None:
    """The annotation beside `video`, or None where there is none."""
    path = annotation_path(video)
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not a JSON document ({exc})") from None
    if not isinstance(document, dict):
        raise AnnotationError(f"{path}: not a JSON object")
    unknown = sorted(set(document) - {"caption", "aesthetic_score"})
    if unknown:
        raise AnnotationError(f"{path}: field {unknown[0]!r} is not one of caption, aesthetic_score")
    caption = document.get("caption")
    if caption is not None and (not isinstance(caption, str) or not caption.strip()):
        raise AnnotationError(f"{path}: field 'caption' must be non-empty text")
    score = document.get("aesthetic_score")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score)
    ):
        raise AnnotationError(f"{path}: field 'aesthetic_score' must be a finite number")
    return Annotation(caption, None if score is None else float(score))
