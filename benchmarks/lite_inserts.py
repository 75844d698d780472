"""Why writes into Milvus Lite slow down as its collection grows: plain `insert`s of 10,000 rows at a time
(512-d vectors, a short text, a drop), with and without the BM25 function Drop Studio's collections have,
and with inserts of several sizes; prints each 10,000 rows' seconds, first and last.

    python benchmarks/lite_inserts.py --rows 300000
    python benchmarks/lite_inserts.py --rows 300000 --no-bm25
    python benchmarks/lite_inserts.py --rows 30000 --batch 1000

benchmarks/search_latency.py times each drop's whole write (`sync_drop`: Drop Studio's reads of the drop's
rows before and its ids after, the inserts, the flush); this times Milvus Lite's inserts alone.
"""

import argparse
import os
import tempfile
import time
import warnings

import numpy as np

from assets_pkg.domain.store.writes import WRITE_BATCH
from report import print_result

warnings.filterwarnings("ignore")

WORDS = "red blue gold silk cape watch hat dress sneakers glass coffee grapes".split()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--batch", type=int, default=WRITE_BATCH, help="rows per insert (default: what Drop Studio sends)")
    p.add_argument("--no-bm25", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    client = MilvusClient(os.path.join(tempfile.mkdtemp(), "inserts.db"))
    schema = client.create_schema()
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=512)
    schema.add_field("text", DataType.VARCHAR, max_length=2000, enable_analyzer=True)
    schema.add_field("drop", DataType.VARCHAR, max_length=128)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
    if not a.no_bm25:
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                     output_field_names=["sparse"]))
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection("inserts", schema=schema, index_params=index)
    rng = np.random.default_rng(0)
    seconds = []
    for d in range(a.rows // 10_000):
        rows = [{"id": f"{d}-{i}", "vector": v.tolist(), "text": " ".join(rng.choice(WORDS, 3)), "drop": f"d{d}"}
                for i, v in enumerate(rng.normal(size=(10_000, 512)).astype(np.float32))]
        start = time.perf_counter()
        for i in range(0, len(rows), a.batch):
            client.insert("inserts", rows[i : i + a.batch])
        seconds.append(time.perf_counter() - start)
    client.close()
    print_result({"rows": a.rows, "batch": a.batch, "bm25": not a.no_bm25,
                  "first_10000_s": round(seconds[0], 2), "last_10000_s": round(seconds[-1], 2),
                  "last_vs_first": round(seconds[-1] / seconds[0], 2)}, a.json)


if __name__ == "__main__":
    main()
