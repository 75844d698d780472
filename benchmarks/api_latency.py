"""`GET /api/search` latency through `drop-studio serve`, as the page calls it: N random unit vectors in a
Milvus Lite collection, the server in its own process (model loaded once), sequential requests over one
keep-alive connection; text encoding, both collections' searches and JSON included.

    python benchmarks/api_latency.py --vectors 100000 --model data/models/vit-b-32-shaped.pt
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import requests

from report import print_result
from search_latency import QUERIES, fill, percentile

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import Serve  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vectors", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--drops", type=int, default=20)
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    model = str(Path(a.model).resolve()) if Path(a.model).is_file() else a.model

    from assets_pkg.domain.encoder import ClipEncoder

    dim = ClipEncoder(model).dim
    with tempfile.TemporaryDirectory() as tmp:
        uri = os.path.join(tmp, "bench.db")
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pool.apply(fill, (uri, a.vectors, dim, a.drops, "product_images"))
        for d in range(a.drops):
            os.makedirs(os.path.join(tmp, "drops", f"drop{d}"))
        env = {**os.environ, "DROPS_DIR": os.path.join(tmp, "drops"), "ARTIFACTS_DIR": os.path.join(tmp, "artifacts"),
               "DROP_STUDIO_MILVUS_URI": uri, "MILVUS_COLLECTION": "product_images", "CLIP_MODEL": model}
        with Serve(env, Path(tmp) / "serve.log") as server:
            url = f"{server.url}/api/search"
            with requests.Session() as http:
                assert http.get(url, params={"q": "warm up", "k": 10}).status_code == 200
                everywhere, one_drop = [], []
                for i in range(a.queries):
                    q = QUERIES[i % len(QUERIES)]
                    t0 = time.perf_counter()
                    r = http.get(url, params={"q": q, "k": 10})
                    t1 = time.perf_counter()
                    r2 = http.get(url, params={"q": q, "k": 10, "drop": "drop3"})
                    t2 = time.perf_counter()
                    assert r.status_code == r2.status_code == 200 and len(r.json()) == 10
                    everywhere.append(t1 - t0)
                    one_drop.append(t2 - t1)
    print_result({"vectors": a.vectors, "queries": a.queries, "model": a.model,
                  "p50_ms": percentile(everywhere, 50), "p99_ms": percentile(everywhere, 99),
                  "one_drop_p50_ms": percentile(one_drop, 50), "one_drop_p99_ms": percentile(one_drop, 99)}, a.json)


if __name__ == "__main__":
    main()
