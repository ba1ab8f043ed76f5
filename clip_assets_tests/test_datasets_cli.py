"""The CLI on a code location with two datasets, as a team adds a second one: every command takes its
dataset from its own defs.yaml and touches nothing of the other; mistakes are one line and a non-zero exit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dagster import DagsterInstance

from clip_assets import layout
from clip_assets_tests.support.factories import make_clips, write_video
from clip_assets_tests.support.projects import Project, one_line_error, project, snapshot

VIDEOS = ("a.mp4", "b.mp4")


def fill_inbox(inbox: Path, names: tuple[str, ...] = VIDEOS, bad: str | None = None) -> None:
    for name in names:
        clips = make_clips(2, source_video=f"/videos/{name}")
        if name == bad:
            clips[1].span_end = clips[1].span_start  # fails validation, alone
        write_video(inbox / f"{name}.parquet", clips, source_video=f"/videos/{name}")


@pytest.fixture
def two_datasets(tmp_path: Path):
    """The default dataset (no prefix) and `cars`, each with its own inbox and output."""
    roots = {name: (tmp_path / f"{name}-inbox", tmp_path / f"{name}-output") for name in ("default", "cars")}
    for inbox, _ in roots.values():
        inbox.mkdir()
    datasets = {
        "default_dataset": {
            "inbox": str(roots["default"][0]),
            "output": str(roots["default"][1]),
            "input_path": "/videos",
        },
        "cars": {
            "key_prefix": ["cars"],
            "inbox": str(roots["cars"][0]),
            "output": str(roots["cars"][1]),
            "input_path": "/videos",
            "partitions_per_run": 1,
        },
    }
    with project(tmp_path, datasets) as made:
        yield made, roots


def partitions(made: Project, name: str) -> list[str]:
    with DagsterInstance.from_config(str(made.home)) as instance:
        return sorted(instance.get_dynamic_partitions(name))


def test_datasets_lists_each_dataset_with_its_roots_and_file(two_datasets):
    made, roots = two_datasets
    listed = made.cli("datasets")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["dataset", "inbox", "output", "partitions", "defined", "in"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["cars"][1:4] == [str(roots["cars"][0]), str(roots["cars"][1]), "0"]
    assert rows["(default)"][1:3] == [str(roots["default"][0]), str(roots["default"][1])]
    assert rows["cars"][4] == str(made.defs_yaml("cars"))


def test_each_command_touches_only_its_own_dataset(two_datasets):
    made, roots = two_datasets
    fill_inbox(roots["default"][0], ("d.mp4",))
    assert made.cli("discover").exit_code == 0
    assert made.cli("backfill", "--all").exit_code == 0
    default_files = snapshot(roots["default"][1])
    assert "processed_videos/d.mp4.json" in default_files

    fill_inbox(roots["cars"][0], bad="b.mp4")
    discovered = made.cli("discover", "--dataset", "cars")
    assert discovered.exit_code == 0, discovered.output
    assert partitions(made, "cars_processed_videos") == ["a.mp4", "b.mp4"]
    assert partitions(made, "processed_videos") == ["d.mp4"]

    backfill = made.cli("backfill", "--dataset", "cars", "--all")
    assert backfill.exit_code == 1, backfill.output  # b.mp4 fails, alone
    cars_output = roots["cars"][1]
    assert (cars_output / "processed_videos/a.mp4.json").exists()
    assert not (cars_output / "processed_videos/b.mp4.json").exists()
    assert "cars_curate_videos[a.mp4...a.mp4] (1 partitions)" in backfill.stdout  # cars' partitions_per_run
    # The dataset group of cars was built from its own partitions.
    assert (cars_output / layout.clip_index_key()).is_dir()
    assert (cars_output / layout.training_shards_index_key()).is_file()
    assert (cars_output / layout.gallery_page_key()).is_file()

    failures = made.cli("failures", "--dataset", "cars")
    assert failures.exit_code == 1
    assert "b.mp4" in failures.stdout and "a.mp4" not in failures.stdout
    assert "span_end" in failures.stdout
    assert made.cli("failures").exit_code == 0  # the default dataset has none

    removed = made.cli("remove", "--dataset", "cars", "a.mp4")
    assert removed.exit_code == 0, removed.output
    assert not (cars_output / "processed_videos/a.mp4.json").exists()
    assert partitions(made, "cars_processed_videos") == ["b.mp4"]
    # Nothing of the default dataset moved: its files byte for byte, its partitions key for key.
    assert snapshot(roots["default"][1]) == default_files
    assert partitions(made, "processed_videos") == ["d.mp4"]


def test_a_root_of_another_dataset_is_refused(two_datasets):
    made, roots = two_datasets
    fill_inbox(roots["cars"][0])
    crossed = made.cli("discover", "--inbox", str(roots["cars"][0]))
    one_line_error(crossed, "is the inbox of dataset 'cars'", "--dataset cars")
    assert partitions(made, "processed_videos") == []
    one_line_error(made.cli("remove", "a.mp4", "--output", str(roots["cars"][1]) + "/"), "output of dataset 'cars'")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (("discover", "--inbox", "/no/such/inbox"), ("inbox /no/such/inbox does not exist",)),
        (("failures", "--output", "s4://bucket/out"), ("unknown scheme 's4'", "s3://")),
        (("backfill", "never-registered.mp4"), ("not a partition of the default dataset", "'never-registered.mp4'")),
        (("backfill", "--all"), ("no partitions are registered", "clip-assets discover")),
        (("discover", "--dataset", "trucks"), ("no dataset 'trucks'", "'cars'")),
        (("failures", "--output", "/no/such/output"), ("output /no/such/output does not exist",)),
    ],
)
def test_mistakes_are_one_line_and_a_non_zero_exit(two_datasets, arguments, expected):
    made, _ = two_datasets
    one_line_error(made.cli(*arguments), *expected)


def test_debug_shows_the_traceback_instead(two_datasets):
    made, _ = two_datasets
    with pytest.raises(Exception, match="unknown scheme"):
        made.cli("--debug", "failures", "--output", "s4://bucket/out")


def test_without_dagster_home_the_project_s_own_home_is_used_and_named(two_datasets, tmp_path, monkeypatch):
    made, roots = two_datasets
    fill_inbox(roots["default"][0], ("d.mp4",))
    monkeypatch.chdir(tmp_path)
    discovered = made.cli("discover", env={"DAGSTER_HOME": None})
    assert discovered.exit_code == 0, discovered.output
    assert "DAGSTER_HOME is not set: recording in clip-assets-data/dagster_home" in discovered.stderr
    with DagsterInstance.from_config(str(tmp_path / "clip-assets-data/dagster_home")) as instance:
        assert instance.get_dynamic_partitions("processed_videos") == ["d.mp4"]
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    one_line_error(made.cli("discover", env={"DAGSTER_HOME": str(a_file)}), "is not a folder")


def test_a_dot_env_file_sets_the_home_as_for_dagster_s_own_commands(two_datasets, tmp_path, monkeypatch):
    made, roots = two_datasets
    fill_inbox(roots["default"][0], ("d.mp4",))
    home = tmp_path / "home-from-dotenv"
    home.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("CLIP_ASSETS_INPUT_PATH", raising=False)
    (tmp_path / ".env").write_text(f"DAGSTER_HOME={home}\nCLIP_ASSETS_INPUT_PATH=/videos-of-the-demo\n")
    assert made.cli("discover", env={"DAGSTER_HOME": None}).exit_code == 0
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("processed_videos") == ["d.mp4"]
    # The file's settings were the command's: whatever calls the CLI in-process (here, the test session)
    # keeps its own environment, so nothing after it records in the demo's home or reads its folders.
    assert "CLIP_ASSETS_INPUT_PATH" not in os.environ


def test_version():
    from click.testing import CliRunner

    from clip_assets.cli import main

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("clip-assets, version ")


def test_writer_settings_in_defs_yaml_reach_runs_launched_without_config(tmp_path):
    """A sensor's run carries no run config: the dataset's YAML is where its writer settings come from."""
    inbox, output = tmp_path / "inbox", tmp_path / "output"
    fill_inbox(inbox, ("a.mp4",))
    attributes = {
        "inbox": str(inbox),
        "output": str(output),
        "input_path": "/videos",
        "writer_settings": {"dry_run": True},
    }
    with project(tmp_path, {"dry": attributes}) as made:
        assert made.cli("discover").exit_code == 0
        assert made.cli("backfill", "--all", "--families-only").exit_code == 0
    assert (output / "processed_videos/a.mp4.json").exists()
    assert not (output / "clips").exists() and not (output / "metas").exists()


def test_a_wrong_writer_setting_names_the_file_and_the_field(tmp_path):
    attributes = {"inbox": str(tmp_path), "writer_settings": {"generate_captions": "maybe"}}
    with project(tmp_path, {"broken": attributes}) as made:
        error = one_line_error(made.cli("datasets"), "writer_settings", "generate_captions")
        assert str(made.defs_yaml("broken")) in error or "broken" in error
