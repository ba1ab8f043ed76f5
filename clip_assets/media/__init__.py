"""What the writer needs from media, in process with PyAV: probing clips and source videos (`probe`).

No ffmpeg or ffprobe subprocesses, no temp files.
"""
