"""What every family asset does first: find its partition's file, validate all of it, then stream it.

Validation reads every column before any artifact is produced, so a bad file fails the partition with
an error naming file, row and field, and nothing of that partition is written or removed.
"""

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from dagster import AssetExecutionContext

from clip_assets import layout
from clip_assets.contract import ClipRecord, ProcessedVideoError, ProcessedVideoReader, VideoInfo
from clip_assets.contract.reader import ValidationSummary
from clip_assets.partition_keys import decode_partition_key
from clip_assets.resources import StorageResource, WriterSettingsResource
from clip_assets.settings import WriterSettings
from clip_assets.storage import Storage


@dataclass(frozen=True)
class ValidatedVideo:
    """A processed video that passed validation, and the means to stream it again."""

    storage: Storage
    key: str
    name: str
    fingerprint: str
    info: VideoInfo
    settings: WriterSettings

    def clips(self, columns: Iterable[str]) -> Iterator[ClipRecord]:
        """Stream clips lazily; refuses a file that changed since it was validated."""
        current = self.storage.stat(self.key)
        if current is None or current.fingerprint != self.fingerprint:
            raise ProcessedVideoError(self.name, "<file>", "changed or vanished after validation; run again")
        with self.storage.open(self.key) as handle, ProcessedVideoReader(handle, self.name) as reader:
            yield from reader.iter_clips(columns)


# File versions already validated in this process, so the five family assets of one run read a file's
# heavy columns once for validation, not five times. Keyed by the file's fingerprint (size and mtime,
# or ETag): a rewritten file is a new key and is validated again.
_VALIDATED: OrderedDict[tuple[str, str], tuple[VideoInfo, ValidationSummary]] = OrderedDict()
_VALIDATED_MAX = 256


def _validate(
    context: AssetExecutionContext, storage: Storage, key: str, name: str, fingerprint: str
) -> tuple[VideoInfo, ValidationSummary]:
    cache_key = (name, fingerprint)
    if cache_key in _VALIDATED:
        _VALIDATED.move_to_end(cache_key)
        return _VALIDATED[cache_key]
    with storage.open(key) as handle, ProcessedVideoReader(handle, name) as reader:
        if reader.unknown_columns:
            context.log.warning(f"{name}: ignoring unknown columns {reader.unknown_columns}")
        result = (reader.info, reader.validate())
    _VALIDATED[cache_key] = result
    if len(_VALIDATED) > _VALIDATED_MAX:
        _VALIDATED.popitem(last=False)
    return result


def open_validated_video(
    context: AssetExecutionContext,
    inbox: StorageResource,
    output: StorageResource,
    writer_settings: WriterSettingsResource,
) -> ValidatedVideo:
    storage = inbox.get_storage()
    key = decode_partition_key(context.partition_key)
    name = f"{storage.root}/{key}"
    current = storage.stat(key)
    if current is None:
        raise ProcessedVideoError(name, "<file>", "does not exist in the inbox")
    settings = writer_settings.to_settings(output.get_storage().root)
    layout.embedding_prefix(settings.embedding_algorithm)  # a configuration error, not the file's
    info, summary = _validate(context, storage, key, name, current.fingerprint)
    try:
        layout.video_relative_path(info.source_video, settings.input_path)
    except layout.LayoutError as exc:
        raise ProcessedVideoError(name, "clip_assets.source_video", str(exc)) from None
    context.log.info(
        f"{name}: valid, {summary.num_clips} clips ({summary.num_passed} passed, {summary.num_filtered} filtered)"
    )
    return ValidatedVideo(storage, key, name, current.fingerprint, info, settings)
