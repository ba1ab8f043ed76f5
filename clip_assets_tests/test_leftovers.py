"""Nothing of a clip is left behind: not when it is removed from the input, not after a killed run."""

from __future__ import annotations

from pathlib import Path

from clip_assets import layout
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.factories import make_clips, write_video

REL = "cam1/street walk.mp4"


def everything(root: Path) -> list[str]:
    """Every file and folder under `root`, folders with a trailing '/'."""
    return sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def test_deleting_a_file_removes_the_folders_it_empties_and_no_more(tmp_path):
    storage = LocalStorage(tmp_path / "out")
    storage.put("previews/a/0_4.webp", b"x")
    storage.put("previews/a/4_8.webp", b"x")
    storage.put("processed_videos/cam1/day 2/a.mp4.json", b"{}")
    storage.put("metas/v0/a.json", b"{}")
    storage.delete("previews/a/0_4.webp")
    assert "previews/a/" in everything(Path(storage.root))  # still holds a file
    storage.delete("previews/a/4_8.webp")
    storage.delete("processed_videos/cam1/day 2/a.mp4.json")
    storage.delete("metas/v0/a.json")
    # The families' own folders and the root stay: only what a video or a clip named is gone.
    nemo_tree = [path for path in everything(Path(storage.root)) if not path.startswith(layout.INTERNAL_PREFIX)]
    assert nemo_tree == ["metas/", "metas/v0/", "previews/", "processed_videos/"]
    storage.put("previews/a/0_4.webp", b"y")  # a folder removed behind the instance's back is made again
    assert storage.read("previews/a/0_4.webp") == b"y"


def test_removing_a_clip_from_the_input_leaves_no_file_or_folder_of_it(inbox, output, run_partition):
    clips = make_clips(3)
    write_video(inbox / f"{REL}.parquet", clips)
    assert run_partition(REL).success
    gone = clips[1].uuid
    assert f"{layout.preview_prefix(gone)}" in everything(output)
    write_video(inbox / f"{REL}.parquet", [clips[0], clips[2]])
    assert run_partition(REL).success
    assert [path for path in everything(output) if gone in path] == []
    assert layout.preview_prefix(clips[0].uuid) in everything(output)
