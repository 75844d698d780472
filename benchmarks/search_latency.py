"""Text-to-image search latency: fill a Milvus Lite collection with N random unit vectors (each row with
catalog fields: a SKU per 4 images, a name, a category and a colour), then time text queries end to end
(CLIP text encoding + search, top 10) and the search alone: CLIP alone, and the hybrid CLIP + BM25 search
Drop Studio runs, also with a category and drop filter. Each query is encoded once and its time counted
in every end-to-end figure.

    python benchmarks/search_latency.py --vectors 100000 --model data/models/vit-b-32-shaped.pt --json
    python benchmarks/search_latency.py --vectors 1000000 --drops 100 --model data/models/vit-b-32-shaped.pt
"""

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from assets_pkg.domain.encoder import ClipEncoder
from assets_pkg.domain.store import ProductImageStore
from report import print_result

warnings.filterwarnings("ignore")

QUERIES = [
    "a red silk cape with gold trim", "a golden watch", "white sneakers", "a blue convertible sports car",
    "a diamond necklace", "a straw hat on the beach", "a leather handbag", "a halter top dress",
    "a martini glass", "a bunch of purple grapes", "a baseball glove", "a cup of coffee",
]


CATEGORIES = ["hats", "footwear", "bags", "watches", "dresses", "glassware", "sports", "jewellery", "tops", "cars"]
COLOURS = ["red", "blue", "green", "white", "black", "gold", "purple", "brown"]
WORDS = sorted({w for q in QUERIES for w in q.split() if len(w) > 2})


def product(i: int, rng) -> dict:
    return {"sku": f"SKU-{i // 4}", "name": " ".join(rng.choice(WORDS, 3)), "category": CATEGORIES[i % 10],
            "color": COLOURS[i % 8], "tags": [], "attributes": {}}


def fill(uri: str, count: int, dim: int, drops: int, collection: str = "bench") -> list[float]:
    """Write `count` rows spread over `drops` drops, each drop as an ingest run writes it (`sync_drop`);
    returns the seconds each drop took."""
    rng = np.random.default_rng(0)
    seconds = []
    with ProductImageStore(uri, collection=collection) as store:
        for d in range(drops):
            lo, hi = count * d // drops, count * (d + 1) // drops
            vecs = rng.normal(size=(hi - lo, dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            rows = [{"sha256": f"{lo + i:064x}", "path": f"img_{lo + i}.jpg", "aliases": [], "width": 1,
                     "height": 1, "vector": vecs[i], "product": product(lo + i, rng)} for i in range(hi - lo)]
            start = time.perf_counter()
            store.sync_drop(f"drop{d}", rows, dim)
            seconds.append(time.perf_counter() - start)
    return seconds


def percentile(values, q) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--drops", type=int, default=20, help="vectors are spread over this many drops")
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--device", default="auto")
    p.add_argument("--keep", metavar="DIR", help="write the collection into DIR and keep it; a later run with "
                   "the same DIR, --vectors and --drops searches it without writing again")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    encoder = ClipEncoder(a.model, a.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.keep or tmp
        os.makedirs(folder, exist_ok=True)
        uri = os.path.join(folder, "bench.db")
        kept = os.path.join(folder, f"written-{a.vectors}-{a.drops}.json")
        if os.path.exists(kept) and os.path.exists(uri):
            per_drop, fill_s = json.loads(Path(kept).read_text())
        else:
            # Written by another process, as an ingest run does; searched as a user meets it afterwards.
            start = time.perf_counter()
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                per_drop = pool.apply(fill, (uri, a.vectors, encoder.dim, a.drops))
            fill_s = time.perf_counter() - start
            if a.keep:
                Path(kept).write_text(json.dumps([per_drop, fill_s]))
        tenth = max(1, len(per_drop) // 10)
        store = ProductImageStore(uri, collection="bench").open()
        assert store.count() == a.vectors

        store.search(encoder.embed_texts(["warm up"]), top_k=10, texts=["warm up"])
        end_to_end, search_only, filtered, hybrid, hybrid_only, hybrid_filtered, hybrid_filtered_only = \
            [], [], [], [], [], [], []
        for i in range(a.queries):
            q = QUERIES[i % len(QUERIES)]
            t0 = time.perf_counter()
            v = encoder.embed_texts([q])
            t1 = time.perf_counter()
            store.search(v, top_k=10)
            t2 = time.perf_counter()
            store.search(v, drop=f"drop{i % a.drops}", top_k=10)
            t3 = time.perf_counter()
            # What a user's query costs now: the same text encoding, then one hybrid search (CLIP + BM25, RRF),
            # alone and with a drop and category filter.
            store.search(v, top_k=10, texts=[q])
            t4 = time.perf_counter()
            store.search(v, drop=f"drop{i % a.drops}", top_k=10, texts=[q], where={"category": CATEGORIES[i % 10]})
            t5 = time.perf_counter()
            encode = t1 - t0
            end_to_end.append(encode + t2 - t1)
            search_only.append(t2 - t1)
            filtered.append(t3 - t2)
            hybrid.append(encode + t4 - t3)
            hybrid_only.append(t4 - t3)
            hybrid_filtered.append(encode + t5 - t4)
            hybrid_filtered_only.append(t5 - t4)
        assert store.full_text
        store.close()

    result = {
        "vectors": a.vectors, "dim": encoder.dim, "queries": a.queries, "device": encoder.device, "model": encoder.model_id,
        "fill_seconds": round(fill_s, 1),
        # Linear writes take as long for the last tenth of the drops as for the first.
        "write_first_tenth_s": round(sum(per_drop[:tenth]), 1), "write_last_tenth_s": round(sum(per_drop[-tenth:]), 1),
        "p50_ms": percentile(end_to_end, 50), "p99_ms": percentile(end_to_end, 99),
        "search_p50_ms": percentile(search_only, 50), "search_p99_ms": percentile(search_only, 99),
        "filtered_search_p50_ms": percentile(filtered, 50), "filtered_search_p99_ms": percentile(filtered, 99),
        "hybrid_p50_ms": percentile(hybrid, 50), "hybrid_p99_ms": percentile(hybrid, 99),
        "hybrid_search_p50_ms": percentile(hybrid_only, 50), "hybrid_search_p99_ms": percentile(hybrid_only, 99),
        "hybrid_filtered_p50_ms": percentile(hybrid_filtered, 50),
        "hybrid_filtered_p99_ms": percentile(hybrid_filtered, 99),
        "hybrid_filtered_search_p50_ms": percentile(hybrid_filtered_only, 50),
        "hybrid_filtered_search_p99_ms": percentile(hybrid_filtered_only, 99),
    }
    print_result(result, a.json)


if __name__ == "__main__":
    main()
