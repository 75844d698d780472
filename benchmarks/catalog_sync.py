"""A catalog of N rows: validate products.csv and bring the drop's Milvus rows in line (Milvus Lite), as an
edit of products.csv alone does in a run (product_catalog, then product_image_collection).

    python benchmarks/catalog_sync.py --rows 10000

The drop's manifest and embeddings are written directly (random unit vectors, 512-d), then synced once
without a catalog; the timed part is the first sync with the catalog (every row gains its product fields),
then an edit that changes 1% of the rows.
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from assets_pkg.domain.artifacts import DropArtifacts
from assets_pkg.stages.catalog.logic import update_catalog
from assets_pkg.stages.collection.logic import sync_collection
from assets_pkg.stages.embeddings.logic import write_embeddings
from assets_pkg.stages.scan.logic import MANIFEST_COLUMNS, Manifest, write_manifest
from assets_pkg.domain.store import ProductImageStore
from report import print_result

warnings.filterwarnings("ignore")


def write_catalog(folder: Path, rows: int, renamed: int = 0) -> None:
    lines = ["file,sku,name,category,color,tags,season"]
    for i in range(rows):
        name = f"Linen shirt {i % 97}" + (" (new)" if i < renamed else "")
        lines.append(f"img/{i:06d}.jpg,SKU-{i // 3},{name},{['tops', 'hats', 'bags'][i % 3]},"
                     f"{['red', 'blue', 'white', 'black'][i % 4]},summer;linen,SS25")
    (folder / "products.csv").write_text("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "drops", "bulk")
        folder.mkdir(parents=True)
        art = DropArtifacts.at(Path(tmp, "artifacts"), "bulk")
        sha = [f"{i:064x}" for i in range(a.rows)]
        images = pd.DataFrame({"path": [f"img/{i:06d}.jpg" for i in range(a.rows)], "sha256": sha, "width": 800,
                               "height": 600, "format": "JPEG", "bytes": 1000, "version": "1"})[MANIFEST_COLUMNS]
        write_manifest(art, Manifest(images))
        vecs = rng.normal(size=(a.rows, a.dim)).astype(np.float32)
        write_embeddings(art, sha, vecs / np.linalg.norm(vecs, axis=1, keepdims=True), "bench-model")
        uri = str(Path(tmp, "m.db"))

        def sync():
            return sync_collection("bulk", art, lambda: ProductImageStore(uri), uri, "product_images", uri)

        update_catalog(folder, art)
        sync()  # the drop as indexed before its catalog

        write_catalog(folder, a.rows)
        t0 = time.perf_counter()
        catalog = update_catalog(folder, art).catalog
        t1 = time.perf_counter()
        first = sync()
        t2 = time.perf_counter()
        write_catalog(folder, a.rows, renamed=a.rows // 100)
        t3 = time.perf_counter()
        update_catalog(folder, art)
        edit = sync()
        t4 = time.perf_counter()
    assert len(catalog.products) == a.rows and not catalog.rejected and first.upserted == a.rows
    print_result({"rows": a.rows, "validate_seconds": round(t1 - t0, 2), "sync_seconds": round(t2 - t1, 2),
                  "validate_and_sync_seconds": round(t2 - t0, 2), "edit_upserted": edit.upserted,
                  "edit_1pct_seconds": round(t4 - t3, 2)}, a.json)


if __name__ == "__main__":
    main()
