"""The same graph against a real Milvus standalone server (PyPI `milvus`, Milvus 2.3) with authentication,
and the faults a server brings: unreachable, wrong token, a network blip, a crash in the middle of an upsert.

The tests skip with a printed reason when the server cannot start, except under CI (CI=true), where that
is a failure: CI must prove the server path."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import numpy as np
import pytest

import assets_pkg.domain.store as store_module
import assets_pkg.domain.store.writes as writes_module
from assets_pkg.domain.milvus import pymilvus
from assets_pkg.stages.briefs.logic import load_briefs
from assets_pkg.domain.encoder import ClipEncoder
from assets_pkg.domain.store import ProductImageStore
from assets_pkg.domain.errors import StoreError
from conftest import BRIEFS, draw_drop, materialize_drop, metadata
from servers import MilvusServer, TcpRelay, Unavailable, unavailable

pytestmark = pytest.mark.services  # starts real servers: left out of `make test-fast`

TOKEN = MilvusServer.TOKEN


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory):
    server = MilvusServer(tmp_path_factory.mktemp("milvus-server"))
    try:
        server.start()
    except Unavailable as e:
        server.kill()
        unavailable(str(e))
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(server.data, ignore_errors=True)


SPRING_PRODUCTS = """file,sku,name,category,color
red_circle_0.png,SKU-1,Sun disc,Hats,Red
red_circle_1.png,SKU-1,Sun disc (back),Hats,Red
blue_square_0.png,SKU-2,Pool tile,Footwear,Blue
"""


def test_a_server_without_bm25_gives_lite_clip_results_with_exact_filters_and_says_so_once(studio, milvus_server):
    """Milvus 2.3 has no BM25: search there is CLIP plus the exact filters, the same answers Lite's CLIP side
    gives, and a run and a search say so in one line."""
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    (studio.drops / "spring" / "products.csv").write_text(SPRING_PRODUCTS)
    [lite] = studio.run_json()
    assert lite["ok"]
    briefs = load_briefs(studio.drops / "spring" / "briefs.yaml")
    encoder = ClipEncoder(studio.env["CLIP_MODEL"])
    with ProductImageStore(studio.env["DROP_STUDIO_MILVUS_URI"]) as store:
        assert store.full_text and store.search_note() is None
        clip_only = {b.id: [(h.path, h.score) for h in store.search(encoder.embed_texts([b.query]), drop="spring",
                                                                     top_k=b.top_k)[0]] for b in briefs}

    server = {"DROP_STUDIO_MILVUS_URI": milvus_server.uri, "MILVUS_TOKEN": TOKEN, "MILVUS_COLLECTION": "server_test"}
    shutil.rmtree(studio.artifacts / "spring")  # start the server side from scratch
    proc = studio.cli("run", "--json", extra_env=server)
    [s] = json.loads(proc.stdout)
    assert s["ok"] and s["indexed"] == 24 and s["products"] == 2
    with ProductImageStore(milvus_server.uri, TOKEN) as store:
        version = store.server_version()
    assert version.startswith("v2.3.")
    note = (f"drop-studio: Milvus at {milvus_server.uri} is {version}, which has no BM25 full-text search (Milvus "
            f"2.5 or newer has it): search uses CLIP and the exact filters (sku, category, color) only")
    assert proc.stderr.splitlines().count(note) == 1, proc.stderr
    refs = json.loads((studio.artifacts / "spring" / "references.json").read_text())
    assert {k: [r["path"] for r in v] for k, v in refs.items()} == {k: [p for p, _ in v] for k, v in clip_only.items()}
    for brief, found in refs.items():
        assert [r["score"] for r in found] == pytest.approx([score for _, score in clip_only[brief]], abs=1e-3)

    search = studio.cli("search", "a red circle", "--category", "footwear", "--json", extra_env=server)
    assert [(h["sku"], h["match"]) for h in json.loads(search.stdout)] == [("SKU-2", "clip")]
    assert search.stderr.splitlines() == [note]
    by_sku = json.loads(studio.cli("search", "SKU-1", "--top-k", "3", "--json", extra_env=server).stdout)
    assert sorted((h["path"].rsplit("/", 1)[-1], h["match"]) for h in by_sku[:2]) == [
        ("red_circle_0.png", "sku"), ("red_circle_1.png", "sku")]

    from test_search_app import Serve

    page = Serve({**os.environ, **studio.env, **server}, studio.root / "serve.log")
    try:
        hits = page.get("/api/search", q="SKU-1", k=2, kind="product").json()
        assert [(h["sku"], h["match"]) for h in hits] == [("SKU-1", "sku")] * 2
    finally:
        page.stop()
    assert (studio.root / "serve.log").read_text().splitlines().count(note) == 1

    [again] = studio.run_json(extra_env=server)  # idempotent on the server too
    assert again["upserted"] == 0
    with ProductImageStore(milvus_server.uri, TOKEN, "server_test") as store:
        assert store.count("spring") == 24 and not store.full_text
        store.client.drop_collection("server_test")


def _exact_top10(store, drops: dict, queries) -> None:
    """Each query's top 10 from the store, across all drops and within one, equal a flat (exact) search's."""
    every = np.concatenate(list(drops.values()))
    names = [(drop, i) for drop in drops for i in range(len(drops[drop]))]
    for k, q in enumerate(queries):
        exact = [names[i] for i in np.argsort(-(every @ q))[:10]]
        assert [(h.drop, int(h.path.split(".")[0])) for h in store.search(q, top_k=10)[0]] == exact, k
        drop = list(drops)[k % len(drops)]
        exact = [(drop, i) for i in np.argsort(-(drops[drop] @ q))[:10]]
        found = [(h.drop, int(h.path.split(".")[0])) for h in store.search(q, drop=drop, top_k=10)[0]]
        assert found == exact, k


def _unit(rng, n: int):
    v = rng.normal(size=(n, 64)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rows(drop: str, vecs) -> list[dict]:
    return [{"sha256": f"{drop}{i:060x}"[-64:], "path": f"{i}.jpg", "aliases": [], "width": 1, "height": 1,
             "vector": v} for i, v in enumerate(vecs)]


def test_many_drops_on_a_server_give_the_results_of_a_flat_search_with_the_drop_as_partition_key_or_not(
        milvus_server):
    """Many tenants the way Milvus recommends (the drop as partition key) must not change what a search finds.
    This server (2.3) gets collections without it: its upserts put every row of a partition-key collection in
    one partition, and a search filtered by drop then finds nothing (seen here); from 2.4 on they have it."""
    rng = np.random.default_rng(5)
    drops = {f"tenant{d}": _unit(rng, 300) for d in range(4)}
    queries = _unit(rng, 12)
    with ProductImageStore(milvus_server.uri, TOKEN, "tenants") as store:
        assert store.server_version().startswith("v2.3.") and not store.drop_is_partition_key()
        assert store.drop_is_partition_key("v2.4.0") and store.drop_is_partition_key("v2.5.10")
        for drop, vecs in drops.items():
            assert store.sync_drop(drop, _rows(drop, vecs), 64).upserted == 300
        assert not any(f.get("is_partition_key") for f in store.client.describe_collection("tenants")["fields"])
        _exact_top10(store, drops, queries)
        store.client.drop_collection("tenants")

    # The layout of a collection made on Milvus 2.4 or newer, with its rows written the way 2.3 partitions
    # them correctly (inserts): the same answers.
    with ProductImageStore(milvus_server.uri, TOKEN, "tenants_by_key") as store:
        store.drop_is_partition_key = lambda version=None: True
        store.ensure_collection(64)
        (key,) = [f["name"] for f in store.client.describe_collection("tenants_by_key")["fields"]
                  if f.get("is_partition_key")]
        assert key == "drop"
        for drop, vecs in drops.items():
            store.client.insert("tenants_by_key", [store._row(drop, r) for r in _rows(drop, vecs)])
        store.flush()
        assert [store.count(drop) for drop in drops] == [300] * 4
        _exact_top10(store, drops, queries)
        store.client.drop_collection("tenants_by_key")


def test_a_wrong_token_is_an_authentication_error_that_never_echoes_it(studio, milvus_server):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)])
    for cmd in (("search", "a red circle"), ("run",)):
        proc = studio.cli(*cmd, check=False,
                          extra_env={"DROP_STUDIO_MILVUS_URI": milvus_server.uri, "MILVUS_TOKEN": "root:not-the-password"})
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        line = [ln for ln in proc.stderr.splitlines() if "DROP_STUDIO_MILVUS_URI" in ln]
        assert line and f"DROP_STUDIO_MILVUS_URI={milvus_server.uri}" in line[0] and "authentication failed" in line[0], proc.stderr
        assert "not-the-password" not in proc.stderr + proc.stdout


def test_a_network_blip_is_retried_with_backoff_and_bounded(milvus_server):
    relay = TcpRelay(int(milvus_server.uri.rsplit(":", 1)[1])).start()
    uri = f"http://127.0.0.1:{relay.port}"
    vectors = np.eye(8, dtype=np.float32)
    rows = [{"sha256": f"{i:064x}", "path": f"{i}.png", "width": 1, "height": 1, "vector": vectors[i]} for i in range(8)]
    with ProductImageStore(uri, TOKEN, "blip_test", retries=4, retry_delay=0.5) as store:
        store.ensure_collection(8)
        store.upsert_drop("spring", rows[:4])
        relay.cut()

        class BackOnFirstRetry(logging.Handler):  # the network comes back while the store backs off
            fired = False

            def emit(self, record):
                if "try 2 of 5" in record.getMessage():
                    self.fired = True
                    relay.start()

        handler = BackOnFirstRetry()
        logging.getLogger(store_module.__name__).addHandler(handler)
        try:
            store.upsert_drop("spring", rows)
        finally:
            logging.getLogger(store_module.__name__).removeHandler(handler)
        assert handler.fired and store.count("spring") == 8
        assert store.search(vectors[5:6], top_k=1)[0][0].path == "5.png"

        relay.cut()  # and gone for good: bounded, then one clear line
        store.retries, store.retry_delay = 2, 0.2
        start = time.time()
        with pytest.raises(StoreError, match=r"Milvus \w+ failed on blip_test at http://127.0.0.1:\d+ after 3 tries"):
            store.count("spring")
        assert time.time() - start < 10
    with ProductImageStore(milvus_server.uri, TOKEN, "blip_test") as store:
        store.client.drop_collection("blip_test")


def test_a_server_killed_mid_upsert_fails_the_run_and_the_next_run_converges(studio, milvus_server, monkeypatch):
    """Runs last in this module: it kills the server (and restarts it on the same data)."""
    names = draw_drop(studio.drops / "spring", briefs=BRIEFS)
    monkeypatch.setenv("DROP_STUDIO_MILVUS_URI", milvus_server.uri)
    monkeypatch.setenv("MILVUS_TOKEN", TOKEN)
    monkeypatch.setenv("MILVUS_COLLECTION", "crash_test")
    monkeypatch.setenv("MILVUS_RETRIES", "1")
    monkeypatch.setattr(writes_module, "WRITE_BATCH", 5)  # 24 rows: five upserts
    monkeypatch.setattr(writes_module, "UPSERTS_IN_FLIGHT", 1)  # one at a time, so the acknowledged ones are exact
    MilvusClient = pymilvus().MilvusClient
    real_upsert, calls = MilvusClient.upsert, []

    def upsert_then_crash(self, *args, **kwargs):
        result = real_upsert(self, *args, **kwargs)
        calls.append(len(args[1]))
        if len(calls) == 2:
            milvus_server.kill()  # SIGKILL after two acknowledged batches, before the third
        return result

    monkeypatch.setattr(MilvusClient, "upsert", upsert_then_crash)
    crashed = materialize_drop("spring")
    assert not crashed.success
    failure = [e for e in crashed.all_events if e.is_step_failure]
    assert [e.step_key for e in failure] == ["product_image_collection"]
    assert "Milvus upsert failed on crash_test" in str(failure[0].step_failure_data.error.cause.message)
    assert calls == [5, 5]

    milvus_server.start()  # same data folder (the port may move while the old one is in TIME_WAIT)
    monkeypatch.setenv("DROP_STUDIO_MILVUS_URI", milvus_server.uri)
    monkeypatch.setattr(MilvusClient, "upsert", real_upsert)
    with ProductImageStore(milvus_server.uri, TOKEN, "crash_test") as store:
        survived = store.count("spring")
    print(f"rows that survived the crash: {survived} of the 10 acknowledged")
    assert survived in (0, 10)  # a batch is all or nothing
    again = materialize_drop("spring")
    assert again.success
    manifest = json.loads((studio.artifacts / "spring" / "references.json").read_text())
    assert manifest  # the rest of the graph ran on the recovered collection
    with ProductImageStore(milvus_server.uri, TOKEN, "crash_test") as store:
        rows = store.rows_of_drop("spring")
        assert sorted(f.path for f in rows.values()) == sorted(names)
        assert store.count("spring") == len(names) == 24  # nothing missing, nothing twice
    # The first sync never finished, so nothing proves which model wrote the surviving rows: the rerun
    # rewrites them all (upserts: still exactly one row per image).
    assert metadata(again, "product_image_collection")["upserted"] == 24
