"""Cost of re-materializing an unchanged drop versus its first materialization (whole graph, with checks).

    python benchmarks/make_images.py --out /tmp/bench-1000 --count 1000 --size 800x600
    python benchmarks/rematerialize.py --images /tmp/bench-1000 --model data/models/vit-b-32-shaped.pt --json
"""

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

from report import print_result

warnings.filterwarnings("ignore")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        drop = Path(tmp) / "drops" / "bench"
        drop.mkdir(parents=True)
        for f in sorted(Path(a.images).iterdir()):
            os.link(f, drop / f.name)  # hard links: a real drop folder without copying the bytes
        os.environ.update({
            "DROPS_DIR": str(Path(tmp) / "drops"), "ARTIFACTS_DIR": str(Path(tmp) / "artifacts"),
            "MILVUS_URI": str(Path(tmp) / "milvus.db"), "CLIP_MODEL": a.model, "DAGSTER_HOME": tmp,
        })
        from dagster import DagsterInstance, materialize

        from assets_pkg.assets import drop_assets
        from assets_pkg.checks import drop_checks
        from orchestration.definitions import build_resources

        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("product_drops", ["bench"])
        times = []
        for _ in range(2):
            start = time.perf_counter()
            result = materialize([*drop_assets, *drop_checks], partition_key="bench", instance=instance,
                                 resources=build_resources())
            times.append(time.perf_counter() - start)
            assert result.success
        emb = result.asset_materializations_for_node("clip_embeddings")[-1].metadata
        images = len(list(drop.iterdir()))

    out = {"images": images, "model": a.model, "first_seconds": round(times[0], 2),
           "second_seconds": round(times[1], 2), "ratio": round(times[1] / times[0], 4),
           "second_run_encoded": emb["encoded"].value, "second_run_reused": emb["reused"].value}
    print_result(out, a.json)


if __name__ == "__main__":
    main()
