"""Name queries on the demo drops: precision at 5 of Drop Studio's search (CLIP fused with BM25 over file
names and catalogs) against CLIP alone, both over the same Milvus rows. A hit counts when its file name
contains the query word (the demo's clip art is named after what it shows).

    python benchmarks/name_search.py --model data/models/tiny-clip.pt

Runs `drop-studio run` on data/drops into a temporary world first (artifacts, Milvus Lite, Dagster home).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from assets_pkg.domain.encoder import ClipEncoder
from assets_pkg.domain.store import ProductImageStore
from report import print_result

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
WORDS = ["apple", "ball", "glass"]


def precision(hits, word: str) -> float:
    return sum(word in Path(h.path).name.lower() for h in hits) / len(hits) if hits else 0.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", str(ROOT / "data/models/tiny-clip.pt")))
    p.add_argument("--drops", default=str(ROOT / "data/drops"))
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DROPS_DIR": a.drops, "ARTIFACTS_DIR": f"{tmp}/artifacts", "DROP_STUDIO_MILVUS_URI": f"{tmp}/m.db",
               "CLIP_MODEL": a.model, "DAGSTER_HOME": f"{tmp}/home"}
        os.makedirs(env["DAGSTER_HOME"])
        Path(env["DAGSTER_HOME"], "dagster.yaml").write_text((ROOT / "orchestration/dagster.yaml").read_text())
        subprocess.run([sys.executable, "-m", "assets_pkg.cli", "run"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        encoder = ClipEncoder(a.model)
        result = {"model": encoder.model_id, "k": a.k}
        hybrid, clip_only = [], []
        with ProductImageStore(env["DROP_STUDIO_MILVUS_URI"]) as store:
            result["images"] = store.count()
            for word in WORDS:
                v = encoder.embed_texts([word])
                h = precision(store.search(v, top_k=a.k, texts=[word])[0], word)
                c = precision(store.search(v, top_k=a.k)[0], word)
                result[f"{word}_hybrid_p@{a.k}"], result[f"{word}_clip_only_p@{a.k}"] = h, c
                hybrid.append(h)
                clip_only.append(c)
        result[f"hybrid_p@{a.k}"] = round(float(np.mean(hybrid)), 3)
        result[f"clip_only_p@{a.k}"] = round(float(np.mean(clip_only)), 3)
    print_result(result, a.json)


if __name__ == "__main__":
    main()
