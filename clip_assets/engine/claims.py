"""Before a partition writes anything: are the output paths its input maps to its own?

Two processed videos can map to the same outputs: the same source video published twice under two
inbox names, or clip ids reused from another video. The writer refuses to overwrite a file another
partition's manifest records (OutputConflictError), but by then the partition's other families may
have been written. These checks run once per partition, right after inspection and before any write,
and fail the partition with an error naming its file and the field that collides.

Each clip id is claimed with a conditional create (`_clip_assets/claims/clips/<uuid>.json`, naming
the partition) before any of the clip's files is written, so of two runs claiming one clip id at the
same moment exactly one gets it; the claim goes when the clip leaves the partition's input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from clip_assets import layout
from clip_assets.contract import ProcessedVideoError, VideoInfo, schema
from clip_assets.engine.inspection import VideoInspection
from clip_assets.families import clip_metadata
from clip_assets.storage import Storage, read_if_exists
from clip_assets.thread_pools import shared_pool

# Claims created or looked up at once (a round trip each on S3).
CLAIMS_IN_FLIGHT = 8


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


def claim_clips(
    output: Storage,
    partition_key: str,
    file: str,
    info: VideoInfo,
    inspection: VideoInspection,
    held: frozenset[str] = frozenset(),
) -> None:
    """Claim every clip id of the input for this partition, before any of its files is written.

    A claim is created only if absent, so it is atomic: a clip id claimed by another partition fails
    this one, naming the clip and that partition; one claimed by this partition already is its own (a
    re-run). Clips the partition's intent record says it `held` are read first (one request, not a
    refused create and a read). When the partition is refused, the claims it created here are
    released again.
    """
    document = json.dumps({"partition": partition_key, "source_video": info.source_video}).encode()

    def claim(clip: str) -> tuple[str, bool, str | None]:
        key = layout.clip_claim_key(clip)
        if clip in held:
            owner = _claim_owner(output, key)
            if owner is not None:
                return clip, False, owner
        for _ in range(3):  # a claim released between the create and the read is taken again
            if output.put_if_absent(key, document) is not None:
                return clip, True, partition_key
            owner = _claim_owner(output, key)
            if owner is not None:
                return clip, False, owner
        return clip, False, None

    answers = list(shared_pool(CLAIMS_IN_FLIGHT).map(claim, inspection.facts))
    refused = [(clip, owner) for clip, _, owner in answers if owner != partition_key]
    if not refused:
        return
    release_clips(output, partition_key, [clip for clip, created, _ in answers if created])
    clip, owner = min(refused, key=lambda refusal: inspection.facts[refusal[0]].row)
    raise ProcessedVideoError(
        file,
        schema.CLIP_UUID,
        f"clip id {clip} is already claimed by partition {owner!r}; clip ids must be unique across videos"
        + (f" ({len(refused)} clip ids of this video are)" if len(refused) > 1 else ""),
        row=inspection.facts[clip].row,
        clip_id=clip,
    )


def release_clips(output: Storage, partition_key: str, clips: Iterable[str]) -> None:
    """Remove this partition's claims on `clips`; a claim another partition holds is left alone."""
    for clip in clips:
        key = layout.clip_claim_key(clip)
        if _claim_owner(output, key) == partition_key:
            output.delete(key)


def _claim_owner(output: Storage, key: str) -> str | None:
    """The partition a claim names; None when there is none (never taken, or its owner released it)."""
    document = read_if_exists(output, key)
    if document is None:
        return None
    owner = json.loads(document).get("partition")
    return str(owner) if owner is not None else None
