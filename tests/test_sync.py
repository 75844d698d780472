"""Drops over time: incremental embedding, exact Milvus sync, the drop sensor, schedules, asset checks."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime

import numpy as np
import pytest
import torch
from dagster import DagsterInstance, build_schedule_context, build_sensor_context

from assets_pkg.domain.drops import ProductDrop
from assets_pkg.stages.scan.logic import scan_drop
from assets_pkg.domain.store import ProductImageStore, row_id
from assets_pkg.resources import DropLibrary
from assets_pkg.partitions import RANGE_END_TAG, RANGE_START_TAG
from conftest import BRIEFS, check_results, draw_drop, materialize_drop, metadata


def milvus_ids(studio, drop: str) -> set[str]:
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        return store.ids_of_drop(drop)


def disk_ids(studio, drop: str) -> set[str]:
    m = scan_drop(ProductDrop(drop, studio.drops / drop))
    return {row_id(drop, h) for h in m.images["sha256"]}


def step(drop: str) -> dict:
    result = materialize_drop(drop)
    assert result.success
    # campaign_images_scores judges what the images show (a warning for a person), not the sync
    checks = {k: v for k, v in check_results(result).items() if k != "campaign_images_scores"}
    assert checks and all(checks.values()), checks
    emb, col = metadata(result, "clip_embeddings"), metadata(result, "product_image_collection")
    return {"encoded": emb["encoded"], "reused": emb["reused"], "upserted": col["upserted"],
            "deleted": col["deleted"], "indexed": col["indexed"]}


def test_add_replace_remove_keep_milvus_exactly_equal_to_disk(studio):
    folder = studio.drops / "spring"
    draw_drop(folder, spec=[("red", "circle", 3), ("blue", "square", 3)])
    assert step("spring") == {"encoded": 6, "reused": 0, "upserted": 6, "deleted": 0, "indexed": 6}
    assert milvus_ids(studio, "spring") == disk_ids(studio, "spring")

    assert step("spring") == {"encoded": 0, "reused": 6, "upserted": 0, "deleted": 0, "indexed": 6}

    draw_drop(folder, spec=[("green", "triangle", 1)], seed=99)  # add one
    assert step("spring") == {"encoded": 1, "reused": 6, "upserted": 1, "deleted": 0, "indexed": 7}
    assert milvus_ids(studio, "spring") == disk_ids(studio, "spring")

    old = row_id("spring", scan_drop(ProductDrop("spring", folder)).images.set_index("path").at["red_circle_0.png", "sha256"])
    draw_drop(folder / "tmp", spec=[("yellow", "star", 1)], seed=5)  # replace red_circle_0 with a star
    shutil.move(folder / "tmp" / "yellow_star_0.png", folder / "red_circle_0.png")
    (folder / "tmp").rmdir()
    assert step("spring") == {"encoded": 1, "reused": 6, "upserted": 1, "deleted": 1, "indexed": 7}
    ids = milvus_ids(studio, "spring")
    assert old not in ids and ids == disk_ids(studio, "spring")

    (folder / "blue_square_1.png").unlink()
    (folder / "blue_square_2.png").unlink()
    assert step("spring") == {"encoded": 0, "reused": 5, "upserted": 0, "deleted": 2, "indexed": 5}
    assert milvus_ids(studio, "spring") == disk_ids(studio, "spring")

    shutil.copy(folder / "red_circle_1.png", folder / "red circle (copy).png")  # same bytes, new name
    assert step("spring") == {"encoded": 0, "reused": 5, "upserted": 1, "deleted": 0, "indexed": 5}
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        rows = store.rows_of_drop("spring")
    assert ("red circle (copy).png", ("red_circle_1.png",)) in [(f.path, f.aliases) for f in rows.values()]


def test_the_same_picture_in_two_drops_is_two_rows(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2)])
    (studio.drops / "summer").mkdir()
    shutil.copy(studio.drops / "spring" / "red_circle_0.png", studio.drops / "summer" / "hero.png")
    step("spring"), step("summer")
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        assert (store.count("spring"), store.count("summer")) == (2, 1)
        sha = scan_drop(ProductDrop("summer", studio.drops / "summer")).images.at[0, "sha256"]
        assert {row_id("spring", sha), row_id("summer", sha)} <= store.ids_of_drop("spring") | store.ids_of_drop("summer")
    (studio.drops / "summer" / "hero.png").unlink()
    assert step("summer")["deleted"] == 1
    assert len(milvus_ids(studio, "spring")) == 2  # spring's copy is untouched


def test_cli_reports_encoded_reused_deleted_truthfully(studio):
    folder = studio.drops / "spring"
    draw_drop(folder, spec=[("red", "circle", 3)])
    (s,) = studio.run_json()
    assert (s["encoded"], s["reused"], s["deleted"], s["indexed"]) == (3, 0, 0, 3)
    assert s["checks"] == {"embeddings_are_sound": True, "collection_matches_manifest": True,
                           "every_brief_has_references": True, "campaign_images_decode": True,
                           "campaign_images_scores": True}
    draw_drop(folder, spec=[("blue", "star", 1)], seed=4)
    (folder / "red_circle_0.png").unlink()
    (s,) = studio.run_json()
    assert (s["encoded"], s["reused"], s["deleted"], s["indexed"]) == (1, 2, 1, 3)


def _tick(instance, cursor, drops_dir):
    from orchestration.sensors import drop_folder_sensor

    ctx = build_sensor_context(instance=instance, cursor=cursor, resources={"library": DropLibrary(drops_dir=drops_dir)})
    result = drop_folder_sensor(ctx)
    for req in result.dynamic_partitions_requests:  # what the sensor daemon does with them
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_sensor_fails_its_tick_on_a_missing_drops_dir_and_keeps_its_cursor(studio):
    from assets_pkg.domain.errors import StudioError

    instance = DagsterInstance.get()
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)])
    first = _tick(instance, None, str(studio.drops))
    missing = str(studio.root / "typo")
    with pytest.raises(StudioError, match=f"^DROPS_DIR={missing}: no such folder$"):
        _tick(instance, first.cursor, missing)  # not "no drops", and not "spring is gone"
    assert _tick(instance, first.cursor, str(studio.drops)).run_requests == []  # the cursor still holds


def test_sensor_adds_new_drops_refreshes_changed_ones_and_reports_removed(studio):
    instance = DagsterInstance.get()
    drops = str(studio.drops)
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2)])
    draw_drop(studio.drops / "summer", spec=[("blue", "square", 2)])

    first = _tick(instance, None, drops)
    # Two new drops at once: one run carrying both (a partition range), in the order the partitions were added.
    (both,) = first.run_requests
    assert both.partition_key is None and both.tags["trigger"] == "new drop" and both.tags["drops"] == "2"
    assert (both.tags[RANGE_START_TAG], both.tags[RANGE_END_TAG]) == ("spring", "summer")
    assert list(instance.get_dynamic_partitions("product_drops")) == ["spring", "summer"]

    unchanged = _tick(instance, first.cursor, drops)
    assert unchanged.run_requests == [] and unchanged.skip_reason.skip_message == "no new or changed drops"

    time.sleep(0.01)
    draw_drop(studio.drops / "summer", spec=[("green", "star", 1)], seed=3)  # a file added to summer only
    changed = _tick(instance, unchanged.cursor, drops)
    assert [(r.partition_key, r.tags["trigger"]) for r in changed.run_requests] == [("summer", "content changed")]

    os.utime(studio.drops / "spring" / "red_circle_0.png", ns=(1, 1))  # a replaced file (new mtime)
    replaced = _tick(instance, changed.cursor, drops)
    assert [r.partition_key for r in replaced.run_requests] == ["spring"]
    assert replaced.run_requests[0].run_key != both.run_key

    (studio.drops / "summer" / "green_star_0.png").unlink()  # a removed file
    removed_file = _tick(instance, replaced.cursor, drops)
    assert [r.partition_key for r in removed_file.run_requests] == ["summer"]

    shutil.rmtree(studio.drops / "summer")  # a removed drop: reported, nothing destroyed
    gone = _tick(instance, removed_file.cursor, drops)
    assert gone.run_requests == []
    assert json.loads(gone.cursor)["gone"] == ["summer"]
    assert "summer" in instance.get_dynamic_partitions("product_drops")


def test_sensor_does_not_rerun_drops_already_materialized_by_the_cli(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2)])
    instance = DagsterInstance.get()  # the sensor reads what the instance recorded
    assert materialize_drop("spring", instance=instance).success
    draw_drop(studio.drops / "fresh", spec=[("red", "circle", 1)])
    result = _tick(instance, None, str(studio.drops))
    assert [r.partition_key for r in result.run_requests] == ["fresh"]


def test_schedules_request_every_drop_in_runs_of_drop_batch(studio, monkeypatch):
    from orchestration.schedules import nightly_catalog_refresh, weekly_campaign_refresh

    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("product_drops", ["b-drop", "a-drop", "c-drop"])
    monkeypatch.setenv("DROP_BATCH", "2")
    for sched, job in ((nightly_catalog_refresh, "refresh_catalog"), (weekly_campaign_refresh, "regenerate_campaigns")):
        assert sched.job_name == job
        reqs = sched(build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 11, 23, 2)))
        # Ranges follow the order the partitions were added, not the names.
        assert [(r.tags.get(RANGE_START_TAG), r.tags.get(RANGE_END_TAG), r.partition_key, r.tags["drop"])
                for r in reqs] == [("b-drop", "a-drop", None, "b-drop..a-drop"), (None, None, "c-drop", "c-drop")]
        assert len({r.run_key for r in reqs}) == 2
    assert nightly_catalog_refresh.cron_schedule == "0 2 * * *"
    assert weekly_campaign_refresh.cron_schedule == "0 6 * * 1"


def test_drops_remove_deletes_rows_and_partition_only_when_asked(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2)])
    draw_drop(studio.drops / "summer", spec=[("blue", "circle", 2)])
    studio.run_json()
    proc = studio.cli("drops", "remove", "spring", check=False)
    assert proc.returncode == 2 and "still exists" in proc.stderr
    shutil.rmtree(studio.drops / "spring")
    out = studio.cli("drops", "remove", "spring").stdout
    assert "deleted 2 Milvus rows" in out
    assert milvus_ids(studio, "spring") == set() and len(milvus_ids(studio, "summer")) == 2
    assert DagsterInstance.get().get_dynamic_partitions("product_drops") == ["summer"]
    assert not (studio.artifacts / "spring").exists()


# -- asset checks on deliberately broken inputs --------------------------------------------
def test_broken_checkpoint_fails_the_blocking_embeddings_check_and_nothing_reaches_milvus(studio, tiny_clip, tmp_path,
                                                                                         monkeypatch):
    state = torch.load(tiny_clip)
    state["visual.proj"] = torch.full_like(state["visual.proj"], float("nan"))
    broken = tmp_path / "nan-clip.pt"
    torch.save(state, broken)
    monkeypatch.setenv("CLIP_MODEL", str(broken))
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2)], briefs=BRIEFS)
    result = materialize_drop("spring")
    assert not result.success
    assert check_results(result)["embeddings_are_sound"] is False
    assert not result.asset_materializations_for_node("product_image_collection")
    assert milvus_ids(studio, "spring") == set()


def _check_metadata(result, name: str) -> dict:
    (evaluation,) = [e.asset_check_evaluation_data for e in result.all_events
                     if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.asset_check_evaluation_data.check_name == name]
    return {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


def test_the_embeddings_check_trusts_the_file_it_read_whole_and_verify_reads_every_vector(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2), ("blue", "square", 1)])
    first = materialize_drop("spring")
    assert _check_metadata(first, "embeddings_are_sound")["verified"] == "every vector read"
    again = _check_metadata(materialize_drop("spring"), "embeddings_are_sound")
    assert again["verified"].startswith("trusted: the file every vector was read from at ")
    assert (again["rows"], again["valid_images"]) == (3, 3)

    # A vector's bytes changed in place, the file's size and modification time kept: no record can see that.
    parquet = studio.artifacts / "spring" / "embeddings.parquet"
    st = parquet.stat()
    from assets_pkg.stages.embeddings.logic import read_vectors

    _, vectors = read_vectors(parquet)
    data = parquet.read_bytes()
    one = vectors[0][:4].tobytes()
    assert data.count(one) == 1
    parquet.write_bytes(data.replace(one, np.full(4, np.nan, np.float32).tobytes()))
    os.utime(parquet, ns=(st.st_atime_ns, st.st_mtime_ns))
    (trusted,) = studio.run_json()
    assert trusted["ok"] and trusted["checks"]["embeddings_are_sound"] is True
    proc = studio.cli("run", "--json", "--verify", check=False)
    (verified,) = json.loads(proc.stdout)
    assert proc.returncode == 1 and verified["checks"]["embeddings_are_sound"] is False
    assert not (studio.artifacts / "spring" / "embeddings.verified.json").exists()  # it vouches for nothing now


def test_collection_check_catches_orphans_and_png_check_catches_broken_images(studio, monkeypatch):
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.stages.campaigns.checks import campaign_images_decode

    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2)], briefs=BRIEFS)
    assert materialize_drop("spring").success
    orphan = {"sha256": "0" * 64, "path": "ghost.png", "aliases": [], "width": 1, "height": 1,
              "vector": np.ones(64, np.float32) / 8}
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:  # an orphan row nobody's folder has
        store.upsert_drop("spring", [orphan])
    # A sync whose deletes are lost (a store fault): the blocking check, run on the step's own connection,
    # sees the orphan and stops the references from being searched in a wrong collection.
    with monkeypatch.context() as patch:
        patch.setattr(ProductImageStore, "delete_ids", lambda self, drop, ids: 0)
        result = materialize_drop("spring")
    assert not result.success and check_results(result)["collection_matches_manifest"] is False
    (evaluation,) = [e.asset_check_evaluation_data for e in result.all_events
                     if e.event_type_value == "ASSET_CHECK_EVALUATION"
                     and e.asset_check_evaluation_data.check_name == "collection_matches_manifest"]
    assert evaluation.metadata["orphans"].value == [row_id("spring", "0" * 64)]
    assert not result.asset_materializations_for_node("reference_images")
    assert step("spring")["deleted"] == 1  # a working sync removes it

    png = studio.artifacts / "spring" / "campaign" / "red-hero.png"
    png.write_bytes(png.read_bytes()[:100])
    broken = campaign_images_decode(DropArtifacts.at(studio.artifacts, "spring"))
    assert not broken.passed and broken.metadata["broken"].value[0].startswith("red-hero.png: ")
    # The next run makes the broken image again (its request is unchanged, but the file is not intact), and
    # the check, evaluated in that step, passes.
    result = materialize_drop("spring")
    assert result.success and check_results(result)["campaign_images_decode"] is True
    assert campaign_images_decode(DropArtifacts.at(studio.artifacts, "spring")).passed


def test_shipped_instance_limits_the_gpu_pool_to_one(studio):
    from assets_pkg.assets import clip_embeddings

    instance = DagsterInstance.get()  # studio's DAGSTER_HOME has the shipped dagster.yaml
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert instance.run_monitoring_enabled
    assert clip_embeddings.op.pool == "gpu"
