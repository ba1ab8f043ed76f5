"""`ProcessedVideoWriterStage`: the NeMo Curator stage that hands a pipeline's clips to clip-assets.

It goes where `ClipWriterStage` was. Each task it gets is one clip chunk of one video; it writes that
chunk as one self-describing chunk file (`<rel>.chunks/<index>-of-<count>.parquet`, or `<rel>.parquet`
for a video NeMo did not chunk) into the inbox, with one atomic storage write, and returns the task
with every buffer released. Workers never coordinate: a video is complete, for discovery, once all
of its chunk files are there, in whatever order they came; a chunk sent again replaces its copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nemo_curator.stages.base import ProcessingStage
from nemo_curator.stages.resources import Resources
from nemo_curator.tasks.video import Video, VideoTask

from clip_assets import layout
from clip_assets.contract import processed_video_bytes
from clip_assets.contract.partition_keys import SUFFIX, chunk_key
from clip_assets.nemo.mapping import MappingError, chunk_rows, is_chunked, source_video
from clip_assets.storage import Storage, open_storage
from clip_assets.storage.options import options_of
from clip_assets.storage.s3 import S3Connection, S3Options

if TYPE_CHECKING:
    from nemo_curator.backends.base import WorkerMetadata


def inbox_key(video: Video, input_path: str) -> str:
    """Where a task's file goes below the inbox: the video's path below `input_path`, as NeMo's writer
    names its output, checked by the same rules as the output layout (no `..`, no aliases)."""
    try:
        relative = layout.video_relative_path(source_video(video), input_path)
    except layout.LayoutError as exc:
        raise MappingError(str(exc)) from None
    video_key = relative + SUFFIX
    if not is_chunked(video):
        return video_key
    return chunk_key(video_key, int(video.clip_chunk_index), int(video.num_clip_chunks))


def release_buffers(video: Video) -> None:
    """Drop every payload of passed *and* filtered clips once written, so a long pipeline's memory stays
    flat (NeMo 1.4.0's writer frees passed clips only: NeMo-Curator PR #1876). Captions go too, as NeMo's
    writer clears them; ids, spans and scores stay for stages after this one."""
    video.source_bytes = None
    video.frame_array = None
    for clip in (*video.clips, *video.filtered_clips):
        clip.buffer = None
        clip.extracted_frames.clear()
        clip.decoded_motion_data = None
        clip.cosmos_embed1_frames = None
        clip.cosmos_embed1_embedding = None
        if getattr(clip, "intern_video_2_embedding", None) is not None:
            clip.intern_video_2_embedding = None
        clip.egomotion.clear()
        for window in clip.windows:
            window.mp4_bytes = None
            window.webp_bytes = None
            window.x1_input = None
            window.llm_inputs.clear()
            window.caption.clear()
            window.enhanced_caption.clear()


@dataclass
class ProcessedVideoWriterStage(ProcessingStage[VideoTask, VideoTask]):  # type: ignore[misc]
    """Writes each clip chunk into the inbox clip-assets watches, instead of NeMo's output tree.

    - `inbox`: a folder or a store's URL (`s3://bucket/prefix`); credentials come from the store's
      standard chain (for S3: environment, profile, instance role). `storage_options` add what the
      chain does not say, in the same names a dataset's defs.yaml and `open_dataset` use (an endpoint,
      `addressing_style: path`, server-side encryption, part sizes). `s3` (an `S3Connection`) and
      `s3_options` (an `S3Options`) are the older spelling of the same, still taken.
    - `input_path`: as NeMo's: the inbox file's path is the video's path below it.
    - `row_group_size`: clips per Parquet row group (clip-assets streams a row group at a time).

    Resources: a quarter CPU, like `ClipWriterStage`: it serializes one chunk (media stored, not
    recompressed) and uploads it once; memory is the chunk's clips plus one copy of its file.
    """

    inbox: str
    input_path: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    s3: S3Connection | None = None
    s3_options: S3Options | None = None
    row_group_size: int = 8
    name: str = "processed_video_writer"
    resources: Resources = field(default_factory=lambda: Resources(cpus=0.25))

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def setup(self, worker_metadata: WorkerMetadata | None = None) -> None:
        """The storage client is made on the worker: the driver's instance is pickled without it."""
        self._storage = self._open()

    def _open(self) -> Storage:
        return open_storage(self.inbox, {**options_of(self.s3, self.s3_options), **self.storage_options})

    def process(self, task: VideoTask) -> VideoTask:
        """Write the task's chunk file atomically (temp file + rename locally; one PUT or a completed
        multipart upload on S3), then release its buffers; raises before writing if it cannot be mapped."""
        storage: Storage | None = getattr(self, "_storage", None)
        if storage is None:
            storage = self._storage = self._open()
        video = task.data
        key = inbox_key(video, self.input_path)
        info, clips = chunk_rows(task)
        storage.put(key, processed_video_bytes(info, clips, row_group_size=self.row_group_size))
        release_buffers(video)
        return task

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the storage client (executors pickle the driver's instance for each worker)."""
        state = dict(self.__dict__)
        state.pop("_storage", None)
        return state
