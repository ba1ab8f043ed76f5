"""Before a partition writes anything: are the output paths its input maps to its own?

Two processed videos can map to the same outputs: the same source video published twice under two
inbox names, or clip ids reused from another video. The writer refuses to overwrite a file another
partition's manifest records (OutputConflictError), but by then the partition's other families may
have been written. This check runs once per partition, right after inspection and before any write,
and fails the partition with an error naming its file and the field that collides. It sees clip ids
that are already written: two runs writing colliding clip ids at the same moment can both pass it.
"""

from __future__ import annotations

import json

from clip_assets import layout
from clip_assets.contract import ProcessedVideoError, VideoInfo, schema
from clip_assets.engine.inspection import VideoInspection
from clip_assets.families import clip_metadata
from clip_assets.storage import Storage


def claim_video(output: Storage, partition_key: str, file: str, info: VideoInfo, relative_video: str) -> None:
    """The first partition to curate a source video owns its outputs; a second one is refused.

    The claim (`_clip_assets/claims/...`) is created once, with a conditional write, and names the
    partition; it is never rewritten, so a re-run costs one read at most.
    """
    key = layout.video_claim_key(relative_video)
    document = json.dumps({"partition": partition_key, "source_video": info.source_video}).encode()
    if output.put_if_absent(key, document) is not None:
        return
    owner = json.loads(output.read(key)).get("partition")
    if owner != partition_key:
        raise ProcessedVideoError(
            file,
            "clip_assets.source_video",
            f"{info.source_video} is already curated by partition {owner!r}, whose outputs this one would "
            f"overwrite; if that partition is gone, remove {output.root}/{key}",
        )


def check_clip_ids(
    output: Storage, file: str, info: VideoInfo, inspection: VideoInspection, already_mine: set[str]
) -> None:
    """No clip id may name another video's clip in the output (its metadata document says whose it is).

    Only ids this partition has not written before are looked up: one stat each.
    """
    source = clip_metadata.clip_source_video(info)
    unknown = [clip for clip in inspection.facts if layout.clip_metadata_key(clip) not in already_mine]
    found = output.stat_many([layout.clip_metadata_key(clip) for clip in unknown])
    for clip, existing in zip(unknown, found, strict=True):
        if existing is None:
            continue
        owner = clip_metadata.owner(output.read(layout.clip_metadata_key(clip)))
        if owner != source:
            raise ProcessedVideoError(
                file,
                schema.CLIP_UUID,
                f"already names a clip of {owner} in the output; clip ids must be unique across videos",
                row=inspection.facts[clip].row,
                clip_id=clip,
            )
