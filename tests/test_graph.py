"""The whole lineage graph for one drop, with the tiny CLIP checkpoint, Milvus Lite and the offline generator."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from assets_pkg.domain.store import ProductImageStore
from assets_pkg.assets import STAGES, drop_assets
from conftest import BRIEFS, draw_drop, materialize_drop, metadata

ASSETS = [a.key.path[-1] for a in drop_assets]


def test_full_graph_materializes_with_exact_results(studio):
    names = draw_drop(studio.drops / "spring", briefs=BRIEFS)
    result = materialize_drop("spring")
    assert result.success, result

    raw = metadata(result, "raw_product_images")
    assert (raw["images"], raw["valid"], raw["rejected"]) == (len(names), len(names), 0)
    assert raw["contact_sheet"].startswith("![drop](data:image/jpeg;base64,")

    emb = metadata(result, "clip_embeddings")
    assert (emb["encoded"], emb["reused"], emb["dim"], emb["device"]) == (24, 0, 64, "cpu")
    assert emb["images_per_second"] > 0
    table = pq.read_table(studio.artifacts / "spring" / "embeddings.parquet")
    vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
    assert vectors.shape == (24, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    col = metadata(result, "product_image_collection")
    assert (col["indexed"], col["upserted"], col["deleted"]) == (24, 24, 0)
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        rows = store.rows_of_drop("spring")
    assert sorted(f.path for f in rows.values()) == sorted(names)

    refs = json.loads((studio.artifacts / "spring" / "references.json").read_text())
    assert [Path(r["path"]).stem.rsplit("_", 1)[0] for r in refs["red-hero"]] == ["red_circle", "red_circle"]
    assert {Path(r["path"]).stem.rsplit("_", 1)[0] for r in refs["blue-shelf"][:2]} == {"blue_square"}
    assert len(refs["blue-shelf"]) == 3  # default top_k
    assert refs["red-hero"][0]["score"] >= refs["red-hero"][1]["score"]

    camp = metadata(result, "campaign_images")
    assert (camp["generator"], camp["generated"], camp["blocked"]) == ("offline-board", 2, [])
    for brief in ("red-hero", "blue-shelf"):
        png = studio.artifacts / "spring" / "campaign" / f"{brief}.png"
        with Image.open(png) as im:
            im.load()
            size = im.size
        sidecar = json.loads(png.with_suffix(".json").read_text())
        assert sidecar["generator"] == "offline-board"
        assert sidecar["brief"]["prompt"]
        assert [r["path"] for r in sidecar["references"]] == [r["path"] for r in refs[brief]]
    assert size == (1344, 768)  # blue-shelf asked for 16:9 at 1K, the pixels the image models answer with

    # Every file the run wrote is one a stage declares (stages/<stage>/logic.py FILES), a contact sheet, or
    # the record of which upgrade steps ran for the drop (domain/upgrade.py).
    from assets_pkg.domain import upgrade

    declared = {f for s in STAGES for f in importlib.import_module(s.__name__.replace(".asset", ".logic")).FILES}
    declared.add(upgrade.RECORD)
    for path in (studio.artifacts / "spring").rglob("*"):
        rel = path.relative_to(studio.artifacts / "spring").as_posix()
        if path.is_file():
            assert rel in declared or rel.split("/")[0] + "/" in declared or rel.startswith("sheets/"), rel


def test_second_run_changes_nothing_in_milvus(studio):
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    first = materialize_drop("spring")
    second = materialize_drop("spring")
    assert first.success and second.success
    emb = metadata(second, "clip_embeddings")
    assert (emb["encoded"], emb["reused"], emb["device"]) == (0, 24, "none (nothing to encode)")
    assert (metadata(first, "reference_images")["searched"], metadata(second, "reference_images")["searched"]) \
        == (True, False)
    assert metadata(second, "raw_product_images")["changed"] is False
    col = metadata(second, "product_image_collection")
    assert (col["indexed"], col["upserted"], col["deleted"], col["unchanged"]) == (24, 0, 0, 24)
    (check,) = [e.asset_check_evaluation_data for e in second.all_events
                if e.event_type_value == "ASSET_CHECK_EVALUATION"
                and e.asset_check_evaluation_data.check_name == "collection_matches_manifest"]
    assert check.passed and "verified_by" in check.metadata  # the Lite file was not even opened
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        assert store.count() == 24
    # Every asset's data version is its stage's key: unchanged inputs, unchanged versions, for every asset.
    for asset in ASSETS:
        (a,), (b,) = first.asset_materializations_for_node(asset), second.asset_materializations_for_node(asset)
        assert a.tags["dagster/data_version"] == b.tags["dagster/data_version"] == b.metadata["inputs_key"].value


def test_a_row_deleted_behind_our_back_is_noticed_and_restored(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 3)])
    assert materialize_drop("spring").success
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:  # someone else writes to the Lite file
        victim = sorted(store.ids_of_drop("spring"))[0]
        store.delete_ids("spring", [victim])
        store.flush()
    result = materialize_drop("spring")
    col = metadata(result, "product_image_collection")
    assert (col["upserted"], col["indexed"]) == (1, 3)
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        assert victim in store.ids_of_drop("spring")


def test_two_drops_share_the_collection_but_searches_stay_in_their_drop(studio):
    draw_drop(studio.drops / "reds", spec=[("red", "circle", 3), ("red", "square", 3)])
    draw_drop(studio.drops / "blues", spec=[("blue", "circle", 3), ("blue", "square", 3)], seed=3)
    assert materialize_drop("reds").success
    assert materialize_drop("blues").success

    from assets_pkg.resources import ClipModel

    query = ClipModel().encoder().embed_texts(["a red circle"])
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        assert (store.count("reds"), store.count("blues"), store.count()) == (6, 6, 12)
        everywhere = store.search(query, top_k=3)[0]
        in_blues = store.search(query, drop="blues", top_k=3)[0]
    assert [h.drop for h in everywhere] == ["reds"] * 3
    assert [h.path.rsplit("_", 1)[0] for h in everywhere] == ["red_circle"] * 3
    assert {h.drop for h in in_blues} == {"blues"}


def test_malformed_briefs_fail_their_step_but_images_are_indexed(studio):
    draw_drop(studio.drops / "spring", briefs="briefs:\n  - id: x\n    prompt: [unclosed\n")
    result = materialize_drop("spring")
    assert not result.success
    assert metadata(result, "product_image_collection")["indexed"] == 24
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["campaign_briefs"]
    message = failures[0].step_failure_data.user_failure_data.description
    assert "briefs.yaml" in message and "not valid YAML" in message


def test_another_drops_sync_does_not_make_this_drop_search_again(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2)], briefs=BRIEFS)
    draw_drop(studio.drops / "summer", spec=[("blue", "square", 2)], seed=3)
    assert materialize_drop("spring").success
    assert materialize_drop("summer").success  # writes the shared Milvus Lite file
    again = materialize_drop("spring")
    assert metadata(again, "product_image_collection")["upserted"] == 0
    assert metadata(again, "reference_images")["searched"] is False
