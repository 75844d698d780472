"""product_duplicates on a large drop: hashing every picture and grouping, then an unchanged re-run.

    python benchmarks/make_images.py --out /tmp/bench-10k --count 10000 --size 1200x900
    python benchmarks/duplicates.py --images /tmp/bench-10k

Times find_duplicates (stages/duplicates/logic.py) on the folder's pictures as they are: the first time
(every picture decoded at reduced scale and hashed with its crops on --workers threads, all pairs
compared, near-identical vectors grouped), then with nothing changed. The vectors are random unit vectors
of CLIP's width (this times the grouping, not CLIP; the embeddings stage is timed by embed_throughput.py).
"""

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from report import print_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets_pkg.domain.artifacts import DropArtifacts  # noqa: E402
from assets_pkg.stages.duplicates.logic import find_duplicates  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    folder = Path(a.images)
    images = [(f.name, hashlib.sha256(f.read_bytes()).hexdigest()) for f in sorted(folder.iterdir())]
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(images), 512)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vectors = {sha: v for (_, sha), v in zip(images, vecs)}
    with tempfile.TemporaryDirectory() as tmp:
        files = DropArtifacts(Path(tmp))
        start = time.perf_counter()
        first = find_duplicates(folder, files, images, lambda: vectors, "bench", a.workers)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        again = find_duplicates(folder, files, images, lambda: vectors, "bench", a.workers)
        again_s = time.perf_counter() - start
    print_result({"pictures": len(images), "workers": a.workers, "first_s": round(first_s, 1),
                  "hashed": first.hashed, "same_shot_groups": len(first.same_shot),
                  "near_identical_groups": len(first.near_identical), "unchanged_ms": round(again_s * 1000, 1),
                  "unchanged_hashed": again.hashed}, a.json)


if __name__ == "__main__":
    main()
