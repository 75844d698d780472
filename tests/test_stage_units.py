"""A stage is a unit: a new one is a folder plus one line, "nothing to do" is the same record for every stage,
and its key is the asset's data version."""

from __future__ import annotations

import importlib
import json

from dagster import DagsterInstance, materialize
from PIL import Image

from assets_pkg.assets import STAGES, product_drops, stage_assets
from assets_pkg.resources import build_resources
from conftest import draw_drop
from example_stage.image_sizes import asset as image_sizes
from example_stage.image_sizes.logic import FILES


def _run(instance, assets, drop: str):
    result = materialize(assets, partition_key=drop, instance=instance, resources=build_resources(),
                         selection=["raw_product_images", "image_sizes"])
    assert result.success
    (mat,) = result.asset_materializations_for_node("image_sizes")
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}, mat.tags["dagster/data_version"]


def test_a_new_stage_is_a_folder_and_one_line_and_keeps_its_output_while_its_input_is_unchanged(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2), ("blue", "square", 1)])  # portrait pictures
    Image.new("RGB", (600, 300), "white").save(studio.drops / "spring" / "wide.png")
    assets, checks = stage_assets([*STAGES, image_sizes])  # the one line
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(product_drops.name, ["spring"])

    first, version = _run(instance, [*assets, *checks], "spring")
    assert first["counted"] is True and first["orientations"] == {"landscape": 1, "portrait": 3}
    written = json.loads((studio.artifacts / "spring" / FILES[0]).read_text())
    assert written["orientations"] == first["orientations"] and written["inputs_key"] == version

    again, same_version = _run(instance, [*assets, *checks], "spring")
    assert again["counted"] is False and same_version == version  # nothing to do: kept, same data version

    (studio.drops / "spring" / "wide.png").touch()  # a new modification time, the same picture
    touched, touched_version = _run(instance, [*assets, *checks], "spring")
    assert touched["counted"] is False and touched_version == version

    Image.new("RGB", (500, 500), "white").save(studio.drops / "spring" / "square.png")
    changed, new_version = _run(instance, [*assets, *checks], "spring")
    assert changed["counted"] is True and changed["orientations"] == {"landscape": 1, "portrait": 3, "square": 1}
    assert new_version != version


def test_every_stage_declares_the_files_it_writes():
    """What a reader of a stage folder is told it owns: every file a full run writes is declared by exactly one
    stage (test_graph checks a real run's files against this)."""
    declared = [f for s in STAGES for f in importlib.import_module(s.__name__.replace(".asset", ".logic")).FILES]
    assert len(declared) == len(set(declared))
    assert {"manifest.parquet", "catalog.json", "embeddings.parquet", "collection.json", "briefs.json",
            "references.json", "campaign/", "campaign-index.json"} <= set(declared)


def test_the_embeddings_key_covers_the_fit_so_switching_it_encodes_again_and_pad_keeps_old_vectors(studio):
    """CLIP_FIT changes every vector; vectors made before the setting existed were padded."""
    from assets_pkg.domain.model_id import clip_model_id
    from assets_pkg.resources import ClipModel

    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2), ("blue", "square", 1)])
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(product_drops.name, ["spring"])
    assets, checks = stage_assets(STAGES)

    def embed(fit: str) -> dict:
        resources = {**build_resources(), "clip": ClipModel(fit=fit)}
        result = materialize([*assets, *checks], partition_key="spring", instance=instance, resources=resources,
                             selection=["raw_product_images", "clip_embeddings"])
        assert result.success
        (mat,) = result.asset_materializations_for_node("clip_embeddings")
        return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}

    padded = embed("pad")
    assert (padded["encoded"], padded["model"]) == (3, clip_model_id(studio.env["CLIP_MODEL"]))
    cropped = embed("crop")
    assert (cropped["encoded"], cropped["model"]) == (3, padded["model"] + "+crop")
    assert cropped["inputs_key"] != padded["inputs_key"]
    assert embed("crop")["encoded"] == 0


def test_each_drop_of_a_failed_batch_keeps_its_own_whole_line_even_when_it_holds_semicolons():
    from assets_pkg.domain.errors import StudioError
    from assets_pkg.partitions import RANGE_END_TAG, RANGE_START_TAG
    from assets_pkg.run_results import failure
    from assets_pkg.stage import Outcome, drop_stage, failed_drops

    lines = {"autumn": "products.csv:3: price 'a; b' is not a number; nor is 'c'", "spring": "briefs.yaml: bad; worse"}

    @drop_stage(name="picky")
    def picky(context, drop: str) -> Outcome:
        if drop in lines:
            raise StudioError(lines[drop])
        return Outcome(key=drop)

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(product_drops.name, ["autumn", "spring", "summer"])
    result = materialize([picky], instance=instance, raise_on_error=False,
                         tags={RANGE_START_TAG: "autumn", RANGE_END_TAG: "summer"})
    assert not result.success
    assert failure(result, "autumn") == f"picky: {lines['autumn']}"
    assert failure(result, "spring") == f"picky: {lines['spring']}"
    steps = [e for e in result.all_events if e.is_step_failure]
    assert failed_drops(steps, ["autumn", "spring", "summer"]) == ["autumn", "spring"]
