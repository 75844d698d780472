"""Drop Studio as most users run it: `dagster dev` (webserver and daemon) on the shipped workspace and instance
config, nothing switched on by hand and no CLI. The sensors, the automation sensor and launched runs do the
work; README's automation table says who runs what, and this test holds the definitions to it, batch-mode
campaign generation included."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from assets_pkg.domain.artifacts import DropArtifacts
from assets_pkg.domain.reviews import Reviews
from assets_pkg.domain.store import ProductImageStore
from assets_pkg.partitions import run_drops
from conftest import BRIEFS, draw_drop
from fake_gemini import FakeGemini
from servers import RUN_WAIT_S, DagsterDev, chrome, wait_for_runs

pytestmark = pytest.mark.services  # starts `dagster dev` and a browser: left out of `make test-fast`

SUMMER_BRIEFS = """briefs:
  - id: red-summer
    prompt: A red product by the pool
    query: a red circle
    top_k: 3
"""


def drops_of(run) -> list[str]:
    """The drops a run carried: its partition, or the drops of its range."""
    span = run_drops(run.tags)
    if span is None:
        return [run.tags["dagster/partition"]] if "dagster/partition" in run.tags else []
    order = DagsterInstance.get().get_dynamic_partitions("product_drops")
    return order[order.index(span[0]):order.index(span[1]) + 1]


def _succeeded(job: str, drop: str, after: float = 0.0, **tags):
    """A waiter: the newest successful run of `job` for `drop` (alone or among others) created after `after`
    (with `tags`)."""

    def done(runs):
        for r in runs:
            if r.job_name == job and drop in drops_of(r) and r.is_finished \
                    and all(r.tags.get(k) == v for k, v in tags.items()):
                record = DagsterInstance.get().get_run_record_by_id(r.run_id)
                if record.create_timestamp.timestamp() > after:
                    if not r.is_success and len(drops_of(r)) > 1:
                        continue  # a failed batch: batch_split runs its drops again
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
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        rows = store.client.query(store.collection, filter=f'drop == "{drop}"', output_fields=["path", "sku", "name"])
    return {r["path"]: (r["sku"], r["name"]) for r in rows if r["sku"]}


def _count(studio, drop: str) -> int:
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        return store.count(drop)


# Ten small drops besides spring and summer, one with a broken briefs.yaml: (name, pictures).
SMALL = [(f"d{i:02}", 1 + i % 3) for i in range(1, 11)]
BROKEN = "d05"


def _materialization(instance, asset: str, drop: str):
    (record,) = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[drop]), limit=1).records
    return record


def _check_passed(instance, asset: str, check: str, drop: str) -> bool:
    from dagster import AssetCheckKey

    (record,) = [r for r in instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(asset), check), limit=100) if r.partition == drop][:1]
    return record.status.value == "SUCCEEDED"


def test_daemon_ingests_drops_references_follow_and_only_the_weekly_run_bills(studio, tmp_path):
    for i, (name, pictures) in enumerate(SMALL):
        draw_drop(studio.drops / name, spec=[("red", "circle", pictures)], seed=100 + i,
                  briefs="briefs: [unclosed\n" if name == BROKEN else None)
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    draw_drop(studio.drops / "summer", spec=[("red", "circle", 2), ("blue", "square", 2)], seed=3,
              briefs=SUMMER_BRIEFS)
    (studio.drops / "summer" / "products.csv").write_text(SUMMER_PRODUCTS)
    with FakeGemini() as gemini:
        # A Gemini key is set: any billed generation would reach this server.
        env = {**os.environ, **studio.env, "GEMINI_API_KEY": "test-key-not-a-secret",
               "GOOGLE_GEMINI_BASE_URL": gemini.url, "DROP_SENSOR_INTERVAL_S": "3", "AUTOMATION_INTERVAL_S": "3",
               "GEMINI_MODE": "batch", "GEMINI_BATCH_POLL_S": "3", "REVIEW_SENSOR_INTERVAL_S": "3"}
        with DagsterDev(env, tmp_path / "dagster-dev.log") as dev:
            instance = DagsterInstance.get()

            # Twelve drops present at start, from the sensor alone: runs of several drops (DROP_BATCH, 10),
            # each drop with its own rows, metadata and checks; the drop with broken briefs fails alone.
            everyone = [name for name, _ in SMALL] + ["spring", "summer"]
            for drop in everyone:
                if drop != BROKEN:
                    wait_for_runs(instance, _succeeded("ingest_drop", drop), RUN_WAIT_S, f"{drop}'s ingest run")
            alone = wait_for_runs(instance, lambda runs: next(
                (r for r in runs if drops_of(r) == [BROKEN] and r.is_finished), None), RUN_WAIT_S, f"{BROKEN} alone")
            assert alone.status.value == "FAILURE" and alone.tags["trigger"].startswith("split from failed run")
            runs = [r for r in instance.get_runs() if r.job_name == "ingest_drop"]
            # d01..d10 failed on d05's briefs and was split: d05 alone, and its neighbours on either side (a
            # run is a range of neighbouring drops); spring..summer never met the broken drop.
            assert sorted((r.tags["drop"], r.tags["trigger"].split(" run ")[0], r.status.value) for r in runs) == [
                ("d01..d04", "split from failed", "SUCCESS"), ("d01..d10", "new drop", "FAILURE"),
                ("d05", "split from failed", "FAILURE"), ("d06..d10", "split from failed", "SUCCESS"),
                ("spring..summer", "new drop", "SUCCESS")]
            assert sorted(instance.get_dynamic_partitions("product_drops")) == sorted(everyone)
            for name, pictures in SMALL:
                assert _count(studio, name) == pictures
                collection = _materialization(instance, "product_image_collection", name).asset_materialization
                assert (collection.metadata["indexed"].value, collection.metadata["deleted"].value) == (pictures, 0)
                assert _check_passed(instance, "product_image_collection", "collection_matches_manifest", name)
                assert _check_passed(instance, "clip_embeddings", "embeddings_are_sound", name)
                if name != BROKEN:
                    assert _materialization(instance, "reference_images", name).asset_materialization \
                        .metadata["briefs"].value == 0
            assert instance.get_materialized_partitions(AssetKey("campaign_briefs")) >= set(everyone) - {BROKEN}
            assert BROKEN not in instance.get_materialized_partitions(AssetKey("campaign_briefs"))
            # In the UI, each drop's partition page shows its own figures from the batched run.
            browser = chrome()
            try:
                for name, pictures in SMALL[:3]:
                    browser.get(f"http://127.0.0.1:{dev.port}/assets/product_image_collection"
                                f"?view=partitions&partition={name}")
                    cell = WebDriverWait(browser, 60).until(lambda b: b.find_elements(
                        By.XPATH, "//td[normalize-space()='indexed']/following-sibling::td[1]"))
                    assert cell[0].text == str(pictures), name
            finally:
                browser.quit()
            failure = next(e for e in instance.all_logs(alone.run_id) if e.is_dagster_event
                           and e.dagster_event.is_step_failure)
            assert failure.dagster_event.step_failure_data.user_failure_data.description.startswith(
                f"{studio.drops / BROKEN / 'briefs.yaml'}: not valid YAML")
            assert (_count(studio, "spring"), _count(studio, "summer")) == (24, 4)
            assert _products(studio, "summer") == {"red_circle_0.png": ("SUN-1", "Sun disc"),
                                                   "blue_square_0.png": ("TILE-2", "Pool tile")}
            assert [r["path"].rsplit("_", 1)[0] for r in _references(studio, "spring")["red-hero"]] == \
                ["red_circle", "red_circle"]

            # A drop added while the daemon runs.
            draw_drop(studio.drops / "autumn", spec=[("green", "triangle", 2)], seed=5)
            wait_for_runs(instance, _succeeded("ingest_drop", "autumn"), RUN_WAIT_S, "autumn's ingest run")
            assert _count(studio, "autumn") == 2

            # Changed images: the sensor's run refreshes the rows and searches the references again.
            before = time.time()
            draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)], seed=99, briefs=BRIEFS)  # overwrites one
            draw_drop(studio.drops / "spring" / "new", spec=[("red", "circle", 1)], seed=42)  # adds one
            run = wait_for_runs(instance, _succeeded("ingest_drop", "spring", before, trigger="content changed"),
                                RUN_WAIT_S, "spring's refresh run")
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
                                RUN_WAIT_S, "summer's run for its edited catalog")
            assert _products(studio, "summer")["red_circle_0.png"] == ("SUN-1", "Sun hat")
            (emb,) = [r for r in instance.fetch_materializations(AssetRecordsFilter(
                asset_key=AssetKey("clip_embeddings"), asset_partitions=["summer"]), limit=10).records
                if r.run_id == run.run_id]
            assert emb.asset_materialization.metadata["encoded"].value == 0

            # The automation path, as after the nightly catalog refresh: the drop sensor is off, a catalog-only
            # run changes summer's rows, and the automation sensor has reference_images follow.
            dev.stop_sensor("drop_folder_sensor")
            # A tick in flight when the sensor stopped can still launch a run (one did, under a loaded suite):
            # let it and its run finish, so that the catalog refresh below is the only change to follow.
            time.sleep(15)
            wait_for_runs(instance, lambda runs: all(r.is_finished for r in runs), RUN_WAIT_S, "the runs in flight")
            (studio.drops / "summer" / "red_circle_0.png").unlink()
            (studio.drops / "summer" / "red_circle_1.png").unlink()
            before = time.time()
            dev.launch("refresh_catalog", "summer")
            wait_for_runs(instance, _succeeded("refresh_catalog", "summer", before), RUN_WAIT_S, "summer's catalog refresh")
            assert _count(studio, "summer") == 2
            follow = wait_for_runs(
                instance, _succeeded("__ASSET_JOB", "summer", before, **{"dagster/sensor_name": "references_follow_inputs"}),
                RUN_WAIT_S, "the automation run for summer's references")  # sensors tick slower on a loaded machine
            assert _latest_references_run(instance, "summer") == (follow.run_id, True)
            assert {r["path"] for r in _references(studio, "summer")["red-summer"]} <= \
                {"blue_square_0.png", "blue_square_1.png"}

            # A refresh that changes nothing is not followed: the rows' data version is the same.
            before = time.time()
            dev.launch("refresh_catalog", "autumn")
            wait_for_runs(instance, _succeeded("refresh_catalog", "autumn", before), RUN_WAIT_S, "autumn's catalog refresh")
            time.sleep(12)  # several automation ticks
            # (Dagster's automation tick can race a run finishing its reference search and request one more
            # run for that drop, which then keeps its references without searching: so only runs after this
            # refresh count.)
            followers = [r for r in instance.get_runs() if r.tags.get("dagster/sensor_name") == "references_follow_inputs"
                         and instance.get_run_record_by_id(r.run_id).create_timestamp.timestamp() > before]
            assert "autumn" not in {d for r in followers for d in drops_of(r)}

            # Billed generation happens only on the weekly schedule or a click: none of this reached Gemini.
            assert gemini.requests == []
            assert instance.get_materialized_partitions(AssetKey("campaign_images")) == set()
            assert all(r.is_success for r in instance.get_runs() if r.tags.get("drops") not in ("10",)
                       and drops_of(r) != [BROKEN])

            # The weekly campaign run (launched here as its schedule would) submits one batch job and ends;
            # the campaign_batches sensor launches the collection once the job has finished.
            before = time.time()
            dev.launch("regenerate_campaigns", "spring")
            wait_for_runs(instance, _succeeded("regenerate_campaigns", "spring", before), RUN_WAIT_S, "the weekly run")
            assert (len(gemini.batch_creations), gemini.generate_requests) == (1, [])
            assert not list((studio.artifacts / "spring" / "campaign").glob("*.png"))
            gemini.finish_batches()
            collect = wait_for_runs(instance, _succeeded("collect_campaign_images", "spring", before), 120,
                                    "the sensor's collection run")
            assert collect.tags["trigger"] == "batch job finished"
            assert sorted(p.name for p in (studio.artifacts / "spring" / "campaign").glob("*.png")) == \
                ["blue-shelf.png", "red-hero.png"]
            assert len(gemini.batch_creations) == 1

            # A reviewer approves one image (as the page's Approve writes it): the campaign_reviews sensor
            # launches campaign_selects for spring, which publishes exactly that image.
            before = time.time()
            Reviews(DropArtifacts.at(studio.env["ARTIFACTS_DIR"], "spring")).record("campaign/red-hero.png", "approve",
                                                                                   reviewer="Gus")
            published = wait_for_runs(instance, _succeeded("publish_selects", "spring", before), 120,
                                      "the reviews sensor's publish run")
            assert published.tags["trigger"] == "review decisions changed"
            assert sorted(p.name for p in (Path(studio.env["PUBLISH_DIR"]) / "spring").iterdir()) == [
                "manifest.csv", "manifest.json", "red-hero.png"]
