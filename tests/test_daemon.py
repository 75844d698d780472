"""Drop Studio as most users run it: `dagster dev` (webserver and daemon) on the shipped workspace and instance
config, nothing switched on by hand and no CLI. The sensors, the automation sensor and launched runs do the
work; README's automation table says who runs what, and this test holds the definitions to it, batch-mode
campaign generation included."""

from __future__ import annotations

import json
import os
import time

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from assets_pkg.domain.store import ProductImageStore
from conftest import BRIEFS, draw_drop
from fake_gemini import FakeGemini
from servers import DagsterDev, wait_for_runs

SUMMER_BRIEFS = """briefs:
  - id: red-summer
    prompt: A red product by the pool
    query: a red circle
    top_k: 3
"""


def _succeeded(job: str, drop: str, after: float = 0.0, **tags):
    """A waiter: the newest successful run of `job` for `drop` created after `after` (with `tags`)."""

    def done(runs):
        for r in runs:
            if r.job_name == job and r.tags.get("dagster/partition") == drop and r.is_finished \
                    and all(r.tags.get(k) == v for k, v in tags.items()):
                record = DagsterInstance.get().get_run_record_by_id(r.run_id)
                if record.create_timestamp.timestamp() > after:
                    assert r.is_success, f"{job} run for {drop} failed"
                    return r
        return None

    return done


def _references(studio, drop: str) -> dict:
    return json.loads((studio.artifacts / drop / "references.json").read_text())


def _latest_references_run(instance, drop: str) -> tuple[str, bool]:
    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("reference_images"), asset_partitions=[drop]), limit=1).records
    return record.run_id, record.asset_materialization.metadata["searched"].value


SUMMER_PRODUCTS = """file,sku,name,category,color
red_circle_0.png,SUN-1,Sun disc,Hats,Red
blue_square_0.png,TILE-2,Pool tile,Footwear,Blue
"""


def _products(studio, drop: str) -> dict[str, tuple[str, str]]:
    with ProductImageStore(studio.env["MILVUS_URI"]) as store:
        rows = store.client.query(store.collection, filter=f'drop == "{drop}"', output_fields=["path", "sku", "name"])
    return {r["path"]: (r["sku"], r["name"]) for r in rows if r["sku"]}


def _count(studio, drop: str) -> int:
    with ProductImageStore(studio.env["MILVUS_URI"]) as store:
        return store.count(drop)


def test_daemon_ingests_drops_references_follow_and_only_the_weekly_run_bills(studio, tmp_path):
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    draw_drop(studio.drops / "summer", spec=[("red", "circle", 2), ("blue", "square", 2)], seed=3,
              briefs=SUMMER_BRIEFS)
    (studio.drops / "summer" / "products.csv").write_text(SUMMER_PRODUCTS)
    with FakeGemini() as gemini:
        # A Gemini key is set: any billed generation would reach this server.
        env = {**os.environ, **studio.env, "GEMINI_API_KEY": "test-key-not-a-secret",
               "GOOGLE_GEMINI_BASE_URL": gemini.url, "DROP_SENSOR_INTERVAL_S": "3", "AUTOMATION_INTERVAL_S": "3",
               "GEMINI_MODE": "batch", "GEMINI_BATCH_POLL_S": "3"}
        with DagsterDev(env, tmp_path / "dagster-dev.log") as dev:
            instance = DagsterInstance.get()

            # Drops present at start: partitions and one ingest run each, from the sensor alone.
            for drop in ("spring", "summer"):
                run = wait_for_runs(instance, _succeeded("ingest_drop", drop), 300, f"{drop}'s ingest run")
                assert run.tags["trigger"] == "new drop"
            assert sorted(instance.get_dynamic_partitions("product_drops")) == ["spring", "summer"]
            assert (_count(studio, "spring"), _count(studio, "summer")) == (24, 4)
            assert _products(studio, "summer") == {"red_circle_0.png": ("SUN-1", "Sun disc"),
                                                   "blue_square_0.png": ("TILE-2", "Pool tile")}
            assert [r["path"].rsplit("_", 1)[0] for r in _references(studio, "spring")["red-hero"]] == \
                ["red_circle", "red_circle"]

            # A drop added while the daemon runs.
            draw_drop(studio.drops / "autumn", spec=[("green", "triangle", 2)], seed=5)
            wait_for_runs(instance, _succeeded("ingest_drop", "autumn"), 300, "autumn's ingest run")
            assert _count(studio, "autumn") == 2

            # Changed images: the sensor's run refreshes the rows and searches the references again.
            before = time.time()
            draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)], seed=99, briefs=BRIEFS)  # overwrites one
            draw_drop(studio.drops / "spring" / "new", spec=[("red", "circle", 1)], seed=42)  # adds one
            run = wait_for_runs(instance, _succeeded("ingest_drop", "spring", before, trigger="content changed"),
                                300, "spring's refresh run")
            assert _count(studio, "spring") == 25
            assert _latest_references_run(instance, "spring") == (run.run_id, True)

            # An edited catalog alone: the sensor's run rewrites the product fields, nothing is encoded.
            before = time.time()
            # Saved the way editors save (a new file renamed over the old): a sensor tick between a truncate
            # and a write would see an empty catalog, fail that run and request another.
            edited = studio.drops / "summer" / ".products.csv.tmp"
            edited.write_text(SUMMER_PRODUCTS.replace("Sun disc", "Sun hat"))
            os.replace(edited, studio.drops / "summer" / "products.csv")
            run = wait_for_runs(instance, _succeeded("ingest_drop", "summer", before, trigger="content changed"),
                                300, "summer's run for its edited catalog")
            assert _products(studio, "summer")["red_circle_0.png"] == ("SUN-1", "Sun hat")
            (emb,) = [r for r in instance.fetch_materializations(AssetRecordsFilter(
                asset_key=AssetKey("clip_embeddings"), asset_partitions=["summer"]), limit=10).records
                if r.run_id == run.run_id]
            assert emb.asset_materialization.metadata["encoded"].value == 0

            # The automation path, as after the nightly catalog refresh: the drop sensor is off, a catalog-only
            # run changes summer's rows, and the automation sensor has reference_images follow.
            dev.stop_sensor("drop_folder_sensor")
            (studio.drops / "summer" / "red_circle_0.png").unlink()
            (studio.drops / "summer" / "red_circle_1.png").unlink()
            before = time.time()
            dev.launch("refresh_catalog", "summer")
            wait_for_runs(instance, _succeeded("refresh_catalog", "summer", before), 300, "summer's catalog refresh")
            assert _count(studio, "summer") == 2
            follow = wait_for_runs(
                instance, _succeeded("__ASSET_JOB", "summer", before, **{"dagster/sensor_name": "references_follow_inputs"}),
                120, "the automation run for summer's references")
            assert _latest_references_run(instance, "summer") == (follow.run_id, True)
            assert {r["path"] for r in _references(studio, "summer")["red-summer"]} <= \
                {"blue_square_0.png", "blue_square_1.png"}

            # A refresh that changes nothing is not followed: the rows' data version is the same.
            before = time.time()
            dev.launch("refresh_catalog", "autumn")
            wait_for_runs(instance, _succeeded("refresh_catalog", "autumn", before), 300, "autumn's catalog refresh")
            time.sleep(12)  # several automation ticks
            followers = [r for r in instance.get_runs() if r.tags.get("dagster/sensor_name") == "references_follow_inputs"]
            # (Dagster's automation tick can race a run finishing its reference search and request one more
            # run for that drop, which then keeps its references without searching; autumn ran no search.)
            assert "autumn" not in {r.tags["dagster/partition"] for r in followers}
            assert "summer" in {r.tags["dagster/partition"] for r in followers}

            # Billed generation happens only on the weekly schedule or a click: none of this reached Gemini.
            assert gemini.requests == []
            assert instance.get_materialized_partitions(AssetKey("campaign_images")) == set()
            assert all(r.is_success for r in instance.get_runs())

            # The weekly campaign run (launched here as its schedule would) submits one batch job and ends;
            # the campaign_batches sensor launches the collection once the job has finished.
            before = time.time()
            dev.launch("regenerate_campaigns", "spring")
            wait_for_runs(instance, _succeeded("regenerate_campaigns", "spring", before), 300, "the weekly run")
            assert (len(gemini.batch_creations), gemini.generate_requests) == (1, [])
            assert not list((studio.artifacts / "spring" / "campaign").glob("*.png"))
            gemini.finish_batches()
            collect = wait_for_runs(instance, _succeeded("collect_campaign_images", "spring", before), 120,
                                    "the sensor's collection run")
            assert collect.tags["trigger"] == "batch job finished"
            assert sorted(p.name for p in (studio.artifacts / "spring" / "campaign").glob("*.png")) == \
                ["blue-shelf.png", "red-hero.png"]
            assert len(gemini.batch_creations) == 1
