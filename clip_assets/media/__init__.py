"""Media handling with PyAV and Pillow, in process: no ffmpeg or ffprobe subprocesses, no temp files.

- `probe`: what a clip's MP4 bytes or a source video file hold (exact frame counts, ffprobe's rates).
- `descriptor`: cheap, honest visual descriptors (colour-grid embedding, frame-difference motion).
- `synthetic`: three small sample videos for trying the pipeline without real footage.
- `ingest`: the upstream producer, source videos in, processed-video files out.

Nothing is re-exported here, so importing the light `probe` module does not pull in the producer's
dependencies (Pillow, tqdm, the contract writer).
"""
