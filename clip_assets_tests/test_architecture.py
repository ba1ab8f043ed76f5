"""The shape docs/architecture.md promises: one-way layers, families as data, datasets as components."""

import ast
import hashlib
import json
from pathlib import Path

from dagster import AssetCheckKey, AssetKey, materialize

import clip_assets
from clip_assets.components.curated_dataset import CuratedDataset
from clip_assets.components.dataset import dataset_definitions, dataset_resources
from clip_assets.components.names import DatasetNames
from clip_assets.components.resources import WriterSettingsResource
from clip_assets.contract import ClipRecord
from clip_assets.dataset import clip_index as ci
from clip_assets.dataset.products import (
    OUTPUT_FAMILIES,
    PRODUCTS,
    Built,
    Checked,
    DerivedProduct,
    ProductCheck,
    ProductOutput,
    ProductRun,
)
from clip_assets.dataset.tables import read_clip_index
from clip_assets.engine.manifest import load_manifest
from clip_assets.families import FAMILIES, Artifact, BuildReport, OutputFamily
from clip_assets.families.base import Damaged, VideoContext
from clip_assets.storage import LocalStorage
from clip_assets_tests.support.factories import make_clips, write_video

PACKAGE = Path(clip_assets.__file__).parent
# Bottom to top; a module may import its own layer or a lower one (docs/architecture.md).
LAYERS = [
    {"layout", "metadata", "settings", "thread_pools"},
    {"contract"},
    {"media", "storage"},
    {"families", "producer", "nemo"},
    {"engine"},
    {"dataset"},
    {"components", "instance"},
    {"defs"},
    {"definitions"},
    {"cli"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(LAYERS) if top in names)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(path: Path) -> set[str]:
    """The package's modules a file imports; `from package import submodule` names the submodule."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clip_assets."):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if is_module(submodule) else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("clip_assets.")}
    return found


def test_every_import_runs_down_the_layers_and_none_closes_a_circle():
    graph = {module_name(path): imports(path) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"}
    graph.update(
        {module_name(path): imports(path) for path in PACKAGE.rglob("__init__.py") if path != PACKAGE / "__init__.py"}
    )
    upward = [
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        pending = list(graph.get(start, ()))
        while pending:
            module = pending.pop()
            if module not in seen:
                seen.add(module)
                pending += graph.get(module, ())
        return seen

    circles = [module for module in graph if module in reachable(module)]
    assert circles == []
    assert len(graph) > 50  # the walk saw the whole package


class Stamps:
    """A throw-away family: one text file per passed clip, naming its span."""

    def __init__(self, video: VideoContext, report: BuildReport) -> None:
        self.report = report

    def add(self, clip: ClipRecord):
        if clip.filtered:
            return ()
        self.report.counts["stamps"] += 1
        return (Artifact(f"stamps/{clip.uuid}.txt", f"{clip.span_start}-{clip.span_end}".encode()),)

    def finish(self):
        return ()


def verify_stamp(key: str, data: bytes) -> None:
    if b"-" not in data:
        raise Damaged("not a span")


STAMPS = OutputFamily(
    name="clip_stamps",
    description="A span per passed clip.",
    kinds=frozenset({"text"}),
    columns=frozenset(),
    builder=Stamps,
    verify=verify_stamp,
)


def test_a_family_added_in_one_place_gets_an_asset_a_check_and_its_outputs(tmp_path, instance):
    names = DatasetNames()
    inbox, output = tmp_path / "inbox", tmp_path / "output"
    clips = make_clips(3, filtered=[1], source_video="/videos/a.mp4")
    write_video(inbox / "a.mp4.parquet", clips, source_video="/videos/a.mp4")
    resources = dataset_resources(names, str(inbox), str(output), WriterSettingsResource(input_path="/videos"))
    definitions = dataset_definitions(names, resources, families=(*FAMILIES, STAMPS))

    assert AssetKey("clip_stamps") in definitions.resolve_all_asset_keys()
    assert AssetCheckKey(AssetKey("clip_stamps"), "intact") in definitions.resolve_asset_graph().asset_check_keys

    instance.add_dynamic_partitions(names.partitions, ["a.mp4"])
    assets = list(definitions.assets or ())
    result = materialize(
        assets,
        selection=[names.key(family.name) for family in (*FAMILIES, STAMPS)],
        partition_key="a.mp4",
        instance=instance,
        resources=definitions.resources,
    )
    assert result.success
    stamps = sorted(p.name for p in (output / "stamps").iterdir())
    assert stamps == sorted(f"{c.uuid}.txt" for c in clips if not c.filtered)
    manifest = load_manifest(LocalStorage(output), "clip_stamps", "a.mp4")
    assert manifest is not None and len(manifest.entries) == 2
    for key, entry in manifest.entries.items():
        assert hashlib.sha256((output / key).read_bytes()).hexdigest() == entry.sha256

    job = definitions.resolve_job_def(names.name("verify_outputs"))
    checked = job.execute_in_process(instance=instance, tags={"dagster/partition": "a.mp4"})
    evaluations = {e.asset_key.to_user_string(): e.passed for e in checked.get_asset_check_evaluations()}
    assert evaluations["clip_stamps"] is True and len(evaluations) == len(FAMILIES) + 1


def count_passed(run: ProductRun) -> Built:
    """A throw-away product: the passed clips of the dataset, counted from the families' views."""
    counted = 0
    for view in run.families["clip_metadata"].values():
        counted += sum(1 for _, document in view.documents() if "/clips/" in document["clip_location"])
    run.storage.put("counts/passed.json", json.dumps({"passed": counted}).encode())
    return Built({"passed_count": {"passed": counted}})


def counted_as_indexed(run: ProductRun) -> Checked:
    counted = json.loads(run.storage.read("counts/passed.json"))["passed"]
    indexed = read_clip_index(run.storage, [ci.PASSED], filter=ci.PASSED).num_rows
    return Checked(counted == indexed, f"{counted} counted, {indexed} indexed")


PASSED_COUNT = DerivedProduct(
    name="passed_count",
    outputs=(ProductOutput("passed_count", "The passed clips, counted.", frozenset({"json"})),),
    build=count_passed,
    depends_on=(OUTPUT_FAMILIES, "clip_index"),
    checks=(
        ProductCheck("counted_as_indexed", "passed_count", "The count agrees with the index.", counted_as_indexed),
    ),
    figures=lambda storage: {"passed_counted": json.loads(storage.read("counts/passed.json"))["passed"]},
)


def test_a_product_added_in_one_place_gets_an_asset_a_check_and_a_summary_entry(tmp_path, instance):
    names = DatasetNames()
    inbox, output = tmp_path / "inbox", tmp_path / "output"
    for name in ("a.mp4", "b.mp4"):
        write_video(
            inbox / f"{name}.parquet",
            make_clips(3, filtered=[1], source_video=f"/videos/{name}"),
            source_video=f"/videos/{name}",
        )
    resources = dataset_resources(names, str(inbox), str(output), WriterSettingsResource(input_path="/videos"))
    products = (*PRODUCTS[:-1], PASSED_COUNT, PRODUCTS[-1])  # before the summary, which asks each for its figures
    definitions = dataset_definitions(names, resources, products=products)
    assert (
        AssetCheckKey(AssetKey("passed_count"), "counted_as_indexed")
        in definitions.resolve_asset_graph().asset_check_keys
    )
    assert AssetKey("passed_count") in definitions.resolve_job_def("build_dataset").asset_layer.executable_asset_keys

    instance.add_dynamic_partitions(names.partitions, ["a.mp4", "b.mp4"])
    for partition in ("a.mp4", "b.mp4"):
        tags = {"dagster/partition": partition}
        for job in ("curate_videos", "index_clips"):
            assert definitions.resolve_job_def(job).execute_in_process(instance=instance, tags=tags).success
    built = definitions.resolve_job_def("build_dataset").execute_in_process(instance=instance)
    assert built.success
    metadata = {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in built.get_asset_materialization_events()
    }
    assert metadata["passed_count"] == {"passed": 4}
    checks = {e.check_name: e.passed for e in built.get_asset_check_evaluations()}
    assert checks["counted_as_indexed"] is True
    summary = json.loads((output / "_clip_assets/dataset_summary.json").read_text())
    assert summary["dataset_tables"]["passed_counted"] == 4 and metadata["dataset_summary"]["passed_counted"] == 4


def test_two_datasets_from_the_component_share_a_code_location_without_colliding(tmp_path, instance):
    default = CuratedDataset()
    cars = CuratedDataset(
        key_prefix=["cars"],
        inbox=str(tmp_path / "cars-inbox"),
        output=str(tmp_path / "cars-output"),
        input_path="/videos",
        partitions_per_run=3,
    )
    merged = type(default.build_defs(None)).merge(default.build_defs(None), cars.build_defs(None))
    keys = merged.resolve_all_asset_keys()
    assert {AssetKey("clip_files"), AssetKey(["cars", "clip_files"])} <= set(keys)
    assert merged.resolve_job_def("cars_curate_videos").name == "cars_curate_videos"
    assert {sensor.name for sensor in merged.sensors or ()} >= {"processed_video_sensor", "cars_processed_video_sensor"}
    outputs = merged.resolve_assets_def(AssetKey(["cars", "clip_files"]))
    assert outputs.backfill_policy is not None and outputs.backfill_policy.max_partitions_per_run == 3

    write_video(
        tmp_path / "cars-inbox/a.mp4.parquet", make_clips(2, source_video="/videos/a.mp4"), source_video="/videos/a.mp4"
    )
    instance.add_dynamic_partitions("cars_processed_videos", ["a.mp4"])
    result = merged.resolve_job_def("cars_curate_videos").execute_in_process(instance=instance, partition_key="a.mp4")
    assert result.success
    assert (tmp_path / "cars-output/processed_videos/a.mp4.json").exists()
    assert not Path(default.output).joinpath("processed_videos/a.mp4.json").exists()


def test_only_the_nemo_layer_imports_nemo_curator():
    """The rest of the package runs without NeMo Curator installed (it is not a dependency)."""

    def imports_nemo(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "nemo_curator" for name in names):
                return True
        return False

    importing = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py") if imports_nemo(path)}
    assert importing and all(path.startswith("nemo/") for path in importing), importing
