"""Changing the embedding model: each model's own collection and files, search on the previous model until every
drop is built for the new one, one switch, nothing encoded again on the way back, an upgrade from the
single-model layout that redoes nothing, and `drop-studio models` / `models compare`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from assets_pkg.domain.search_models import SearchModels, model_key
from assets_pkg.domain.store import ProductImageStore
from conftest import BRIEFS, draw_drop, in_memory_instance, materialize_drop, metadata


@pytest.fixture(scope="module")
def vit_s32(tmp_path_factory):
    """open_clip ViT-S-32 with random weights in a file: 384-d, where the tiny model is 64-d."""
    from assets_pkg.domain.checkpoints import write_open_clip_weights

    path = tmp_path_factory.mktemp("open_clip") / "ViT-S-32.pt"
    return f"open_clip:ViT-S-32:{write_open_clip_weights(path, 'ViT-S-32')}"


def models_of(studio) -> SearchModels:
    return SearchModels.load(studio.env["ARTIFACTS_DIR"], "product_images")


def rows(studio, collection: str, drop: str) -> dict[str, int]:
    """row id -> vector dimension, of a drop's rows in a collection."""
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"], collection=collection) as store:
        if not store.exists():
            return {}
        got = store.client.query(collection, filter=f'drop == "{drop}"', output_fields=["id", "vector"])
    return {r["id"]: len(r["vector"]) for r in got}


def switch():
    """What the model_changes sensor launches once every drop is built: a run of search_model."""
    from assets_pkg.assets import search_assets
    from assets_pkg.resources import build_resources

    result = materialize(search_assets, instance=in_memory_instance(), resources=build_resources())
    assert result.success
    return metadata(result, "search_model")


def evaluate_model_changes(cursor: str | None = None) -> tuple[list, str]:
    """One tick of the model_changes sensor, as the daemon evaluates it: (run requests, its cursor after)."""
    from dagster import build_sensor_context

    from assets_pkg.resources import build_resources
    from orchestration.sensors import model_changes

    # The instance this test's runs (materialize_drop) went to.
    with build_sensor_context(instance=in_memory_instance(), cursor=cursor, resources=build_resources()) as context:
        result = model_changes(context)
    return list(result.run_requests or []), result.cursor


@pytest.mark.slow
def test_a_second_model_gets_its_own_collection_search_moves_once_every_drop_is_built_and_back_encodes_nothing(
        studio, vit_s32, tiny_clip, monkeypatch):
    spring = draw_drop(studio.drops / "spring", briefs=BRIEFS)
    summer = draw_drop(studio.drops / "summer", spec=[("red", "circle", 3), ("blue", "square", 2)], seed=3,
                       briefs=BRIEFS)
    for drop in ("spring", "summer"):
        assert materialize_drop(drop).success
    tiny = models_of(studio).serving
    assert (tiny.collection, tiny.files_dir) == ("product_images", "")  # the first model: the layout as before
    refs_tiny = json.loads((studio.artifacts / "spring" / "references.json").read_text())

    monkeypatch.setenv("CLIP_MODEL", vit_s32)
    # What the daemon does when it sees the new CLIP_MODEL: one rebuild run for both drops (a batch).
    (rebuild,), cursor = evaluate_model_changes()
    assert rebuild.job_name == "rebuild_for_model" and rebuild.tags["drop"] == "spring..summer"
    assert evaluate_model_changes(cursor) == ([], cursor)  # asked once; summer is not built yet
    result = materialize_drop("spring")
    assert result.success
    models = models_of(studio)
    other = models.target
    assert other.id.startswith("open_clip:ViT-S-32:ViT-S-32.pt@") and models.serving == tiny
    assert other.collection == f"product_images__{model_key(other.id)}"
    emb = metadata(result, "clip_embeddings")
    assert (emb["model"], emb["encoded"], emb["dim"]) == (other.id, len(spring), 384)
    # Two collections, each with exactly the drop's images, each of its own model's dimension.
    assert sorted(rows(studio, other.collection, "spring").values()) == [384] * len(spring)
    assert sorted(rows(studio, "product_images", "spring").values()) == [64] * len(spring)
    assert rows(studio, "product_images", "spring").keys() == rows(studio, other.collection, "spring").keys()
    vectors = pq.read_table(studio.artifacts / "spring" / other.files_dir / "embeddings.parquet")
    assert vectors.num_rows == len(spring)
    # The first model's files are where they were, untouched.
    assert json.loads((studio.artifacts / "spring" / "embeddings.json").read_text())["dim"] == 64
    col = metadata(result, "product_image_collection")
    assert (col["collection"], col["serving_model"]) == (other.collection, tiny.id)
    # Search (and the briefs' references) still answer from the tiny model: summer is not built yet.
    assert json.loads((studio.artifacts / "spring" / "references.json").read_text()) == refs_tiny
    hits = json.loads(studio.cli("search", "a red circle", "--json", extra_env={"CLIP_MODEL": vit_s32}).stdout)
    assert {h["drop"] for h in hits} == {"spring", "summer"}
    listed = json.loads(studio.cli("models", "--json").stdout)
    assert (listed["serving"]["model"], listed["target"]["model"]) == (tiny.id, other.id)
    assert (listed["target"]["drops_built"], listed["target"]["drops"]) == (1, 2)
    by = {(r["drop"], r["model"]): r for r in listed["drops"]}
    assert (by["spring", other.id]["encoded"], by["spring", other.id]["built"]) == (len(spring), True)
    assert ("summer", other.id) not in by and by["summer", tiny.id]["in_collection"] == len(summer)

    state = switch()
    assert (state["switched"], state["serving_model"], state["drops_built"]) == (False, tiny.id, 1)
    assert materialize_drop("summer").success
    monkeypatch.setenv("MODEL_SWITCH", "manual")  # a person compares first: every drop built, no switch asked
    assert evaluate_model_changes(cursor) == ([], cursor)
    monkeypatch.setenv("MODEL_SWITCH", "auto")
    (asked,), _ = evaluate_model_changes(cursor)
    assert asked.job_name == "switch_search_model"
    state = switch()
    assert (state["switched"], state["serving_model"], state["collection"]) == (True, other.id, other.collection)
    hits = json.loads(studio.cli("search", "a red circle", "--json", extra_env={"CLIP_MODEL": str(tiny_clip)}).stdout)
    assert len(hits) == 10  # the tiny model in CLIP_MODEL of this process, but search now answers with ViT-S-32

    # Two built models, compared on every brief's query and one of ours.
    out = studio.cli("models", "compare", tiny.id, vit_s32, "-q", "a blue square", "--top-k", "3", "--json")
    compared = json.loads(out.stdout)
    assert [c["source"] for c in compared] == ["given", "spring/red-hero", "spring/blue-shelf", "summer/red-hero",
                                               "summer/blue-shelf"]
    for c in compared:
        assert len(c["a"]) == len(c["b"]) == 3
        assert c["overlap"] == pytest.approx((3 - len(c["only_a"])) / 3, abs=1e-3) and len(c["only_a"]) == len(c["only_b"])
        assert set(c["only_a"]) == set(c["a"]) - set(c["b"])
        if c["source"] != "given":
            assert all(p.startswith(c["drop"] + "/") for p in c["a"] + c["b"])
        assert Path(c["sheet"]).stat().st_size > 0
    table = studio.cli("models", "compare", tiny.id, vit_s32, "--no-briefs", "-q", "a red circle").stdout
    assert "overlap" in table and "'a red circle' (given)" in table

    # Back to the tiny model: nothing is encoded again, and search moves back once both drops are built.
    monkeypatch.setenv("CLIP_MODEL", str(tiny_clip))
    for drop in ("spring", "summer"):
        result = materialize_drop(drop)
        assert (metadata(result, "clip_embeddings")["encoded"], metadata(result, "clip_embeddings")["reused"]) == \
            (0, len(spring if drop == "spring" else summer))
        assert metadata(result, "product_image_collection")["upserted"] == 0
    assert studio.cli("models", "switch").stdout.strip() == \
        f"search now answers from {tiny.id} (collection product_images)"
    assert models_of(studio).serving == tiny
    assert [h["serving"] for h in models_of(studio).state["history"]] == [tiny.id, other.id, tiny.id]


def test_an_upgrade_from_the_one_model_layout_adopts_it_and_encodes_syncs_and_searches_nothing(studio):
    names = draw_drop(studio.drops / "spring", briefs=BRIEFS)
    assert materialize_drop("spring").success
    # The previous release's layout: the same drop files and collection, and no models state.
    shutil.rmtree(studio.artifacts / "_models")
    before = {p.name: p.read_bytes() for p in (studio.artifacts / "spring").glob("*.json")}

    result = materialize_drop("spring")
    assert result.success
    emb, col = metadata(result, "clip_embeddings"), metadata(result, "product_image_collection")
    assert (emb["encoded"], emb["reused"], col["upserted"], col["deleted"]) == (0, len(names), 0, 0)
    assert metadata(result, "reference_images")["searched"] is False
    assert {p.name: p.read_bytes() for p in (studio.artifacts / "spring").glob("*.json")} == before
    models = models_of(studio)
    assert (models.serving.id, models.serving.collection, models.target) == (emb["model"], "product_images", None)
    assert models.state["history"][0]["adopted"] is True


def test_search_loads_the_serving_model_from_its_file_and_says_so_when_the_file_now_holds_other_weights(
        studio, tmp_path, tiny_clip):
    from assets_pkg.domain.model_id import clip_model_id

    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    moved = tmp_path / "model.pt"
    shutil.copy(tiny_clip, moved)
    studio.cli("run", "--drop", "spring", extra_env={"CLIP_MODEL": str(moved)})
    serving = models_of(studio).serving
    assert serving.spec == str(moved)
    # CLIP_MODEL names the same bytes under another file name, so another model id: search loads the serving
    # model from where it was loaded, and answers.
    assert len(json.loads(studio.cli("search", "a red circle", "--json").stdout)) == 10
    moved.write_bytes(b"other weights")
    broken = studio.cli("search", "a red circle", check=False)
    assert broken.returncode == 2
    assert broken.stderr.strip().splitlines() == [
        f"drop-studio: error: search answers from {serving.id}, but {moved} now holds other weights "
        f"({clip_model_id(str(moved))}): put those weights back, or finish the change of model"]


@pytest.mark.services
def test_under_dagster_dev_a_new_model_is_built_in_the_background_and_search_moves_to_it_once_every_drop_is(
        studio, tmp_path, vit_s32):
    """As users change models: CLIP_MODEL edited and `dagster dev` restarted, nothing launched by hand. The search
    page is asked throughout; no request fails, each answer names the one model whose collection answered, and
    answers move to the new model once, after every drop's rebuild."""
    import threading
    import time

    from dagster import AssetKey, AssetRecordsFilter

    from servers import RUN_WAIT_S, DagsterDev, Serve, wait_for_runs
    from test_daemon import _succeeded, drops_of

    drops = {"spring": draw_drop(studio.drops / "spring", briefs=BRIEFS),
             "summer": draw_drop(studio.drops / "summer", spec=[("red", "circle", 2), ("blue", "square", 2)], seed=3),
             "autumn": draw_drop(studio.drops / "autumn", spec=[("green", "triangle", 3)], seed=5)}
    fast = {"DROP_SENSOR_INTERVAL_S": "3", "AUTOMATION_INTERVAL_S": "3"}
    env = {**os.environ, **studio.env, **fast}
    instance = DagsterInstance.get()
    with DagsterDev(env, tmp_path / "dagster-dev.log"):
        for drop in drops:
            wait_for_runs(instance, _succeeded("ingest_drop", drop), RUN_WAIT_S, f"{drop}'s ingest run")
    tiny = models_of(studio).serving

    answers: list[tuple[float, int, str | None, set]] = []
    stop = threading.Event()
    with Serve(env, tmp_path / "serve.log") as page:
        def ask():
            while not stop.is_set():
                r = page.get("/api/search", q="a red circle", k="5", kind="product")
                answers.append((time.time(), r.status_code, r.headers.get("X-Search-Model"),
                                {h["drop"] for h in r.json()} if r.ok else set()))
                time.sleep(0.2)

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        try:
            with DagsterDev({**env, "CLIP_MODEL": vit_s32}, tmp_path / "dagster-dev-2.log"):
                switched = wait_for_runs(instance, lambda runs: next(
                    (r for r in runs if r.job_name == "switch_search_model" and r.is_finished), None), 600,
                    "the switch to the new model")
                assert switched.is_success
                for drop in drops:
                    wait_for_runs(instance, _succeeded("search_references", drop), RUN_WAIT_S, f"{drop}'s references")
            time.sleep(2)
        finally:
            stop.set()
            asker.join(timeout=60)

    models = models_of(studio)
    new = models.serving
    assert new.id != tiny.id and new.id.startswith("open_clip:ViT-S-32:") and models.target is None
    assert answers and all(status == 200 for _, status, _, _ in answers), \
        [a for a in answers if a[1] != 200][:3]
    sequence = [model for _, _, model, _ in answers]
    assert set(sequence) == {tiny.id, new.id}
    first_new = sequence.index(new.id)
    assert sequence[:first_new] == [tiny.id] * first_new and sequence[first_new:] == [new.id] * (len(sequence) - first_new)
    assert all(found == {"spring", "summer"} for _, _, _, found in answers)  # red circles: every drop that has them

    rebuilds = [r for r in instance.get_runs() if r.job_name == "rebuild_for_model"]
    assert rebuilds and all(r.is_success for r in rebuilds)
    assert sorted(d for r in rebuilds for d in drops_of(r)) == sorted(drops)
    built_at = max(instance.get_run_record_by_id(r.run_id).end_time for r in rebuilds)
    started_at = min(instance.get_run_record_by_id(r.run_id).create_timestamp.timestamp() for r in rebuilds)
    assert answers[first_new][0] > built_at  # the new model answered only once every drop was built
    assert sum(1 for t, _, m, _ in answers if started_at < t < built_at and m == tiny.id) > 0  # search went on
    for drop, names in drops.items():
        assert sorted(rows(studio, new.collection, drop).values()) == [384] * len(names)
        assert sorted(rows(studio, "product_images", drop).values()) == [64] * len(names)
    (record,) = instance.fetch_materializations(AssetKey("search_model"), limit=1).records
    shown = record.asset_materialization.metadata
    assert (shown["serving_model"].value, shown["switched"].value, shown["drops_built"].value) == (new.id, True, 3)
    # Spring's briefs were searched again after the switch (by search_references, or by the automation sensor
    # if it got there first: then search_references kept what it found).
    switch_time = instance.get_run_record_by_id(switched.run_id).create_timestamp.timestamp()
    spring_refs = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("reference_images"), asset_partitions=["spring"]), limit=20).records
    assert any(r.asset_materialization.metadata["searched"].value for r in spring_refs if r.timestamp > switch_time)


def test_the_models_state_keeps_a_switch_saved_by_another_process_meanwhile(tmp_path):
    root = str(tmp_path / "artifacts")
    SearchModels.load(root, "product_images").use("A", "a.pt", "pad")  # the first model serves at once
    changing = SearchModels.load(root, "product_images")
    assert changing.use("B", "b.pt", "pad").collection == f"product_images__{model_key('B')}"
    stale = SearchModels.load(root, "product_images")  # a run of B that loaded the state before the switch
    assert changing.switch_if_ready([]) == (True, {})  # no drop to wait for
    stale.use("B", "/moved/b.pt", "pad")  # it records where B's weights are now, and must not undo the switch
    now = SearchModels.load(root, "product_images")
    assert (now.serving.id, now.serving.spec, now.target) == ("B", "/moved/b.pt", None)
    assert [h["serving"] for h in now.state["history"]] == ["A", "B"]


def test_reading_the_models_state_never_writes_it_and_the_first_write_adopts_the_one_model_layout(tmp_path):
    root = tmp_path / "artifacts"
    (root / "spring").mkdir(parents=True)
    # An earlier release's drop: its collection record names the one model, and there is no models state.
    (root / "spring" / "collection.json").write_text(json.dumps({"collection": "product_images", "model_id": "A"}))
    state_file = Path(SearchModels.path_of(str(root), "product_images"))
    for _ in range(2):
        models = SearchModels.load(str(root), "product_images")
        assert models.serving is None and models.facts(["spring"], manual=False).serving is None
    assert not state_file.exists() and not (root / "_models").exists()
    # The first change (a run with CLIP_MODEL at another model) takes the earlier model as the serving one.
    models.use("B", "b.pt", "pad")
    state = json.loads(state_file.read_text())
    assert (state["serving"], state["target"]["model"]) == ("A", "B")
    assert state["models"]["A"]["collection"] == "product_images" and state["history"][0]["adopted"] is True
    assert (models.serving.id, models.target.id) == ("A", "B")


def test_concurrent_changes_of_the_models_state_are_each_kept(tmp_path):
    """Eight processes each register a model at once: under the lock every one is kept, none overwritten."""
    import multiprocessing

    root = str(tmp_path / "artifacts")
    SearchModels.load(root, "product_images").use("A", "a.pt", "pad")
    pool = multiprocessing.get_context("spawn").Pool(4)
    pool.starmap(_register_model, [(root, f"M{i}") for i in range(8)])
    pool.close()  # workers leave when told to; `with Pool` terminates them, which hangs where SIGTERM is ignored
    pool.join()
    models = SearchModels.load(root, "product_images")
    assert sorted(m.id for m in models.models()) == ["A"] + sorted(f"M{i}" for i in range(8))
    assert models.serving.id == "A"


def _register_model(root: str, model: str) -> None:
    SearchModels.load(root, "product_images").change(
        lambda state: state["models"].setdefault(model, {"spec": f"{model}.pt", "fit": "pad",
                                                         "collection": f"product_images__{model}", "files": ""}))
