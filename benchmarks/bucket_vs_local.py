"""The whole graph with drops and artifacts in a bucket against the same drop on local disk, in one process.

    python benchmarks/make_images.py --out /tmp/bench-1000 --count 1000 --size 800x600
    python benchmarks/bucket_vs_local.py --images /tmp/bench-1000 --model data/models/vit-b-32-shaped.pt

The bucket is a real S3-compatible server (moto_server, as in the tests) on loopback, sharing this machine's
cores with the encoder. For each place: a first materialization (every image scanned and embedded) and an
unchanged re-run, each with its own Milvus Lite file and artifacts. The server's access log counts the
downloads of image objects (GETs of keys under the drop, not listings). With `--places bucket` only the
bucket runs, and the process's peak RSS after them shows whether memory grows with the drop.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

from report import print_result

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import S3Server  # noqa: E402


def _materialize(instance) -> float:
    from dagster import materialize

    from assets_pkg.assets import drop_assets, drop_checks
    from orchestration.definitions import build_resources

    start = time.perf_counter()
    result = materialize([*drop_assets, *drop_checks], partition_key="bench", instance=instance,
                         resources=build_resources(),
                         run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    if not result.success:
        raise SystemExit("the run failed")
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--places", default="local,bucket", help="which of local,bucket to run, in that order")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    images = sorted(Path(a.images).iterdir())

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        s3 = S3Server(tmp / "s3").start()
        try:
            os.environ.update(s3.env())
            client = s3.client()
            client.create_bucket(Bucket="bench")
            for f in images:
                client.put_object(Bucket="bench", Key=f"drops/bench/{f.name}", Body=f.read_bytes())
            local = tmp / "drops" / "bench"
            local.mkdir(parents=True)
            for f in images:
                os.link(f, local / f.name)
            os.environ["CLIP_MODEL"] = str(Path(a.model).resolve()) if Path(a.model).is_file() else a.model

            from dagster import DagsterInstance

            from assets_pkg.domain.encoder import ClipEncoder

            ClipEncoder(os.environ["CLIP_MODEL"]).close()  # imports and the weights' file cache, paid before timing
            instance = DagsterInstance.ephemeral()
            instance.add_dynamic_partitions("product_drops", ["bench"])
            out = {"images": len(images), "model": a.model}
            places = {"local": (tmp / "drops", tmp / "artifacts"),
                      "bucket": ("s3://bench/drops", "s3://bench/artifacts")}
            for place in a.places.split(","):
                drops, artifacts = places[place]
                os.environ.update({"DROPS_DIR": str(drops), "ARTIFACTS_DIR": str(artifacts),
                                   "DROP_STUDIO_MILVUS_URI": str(tmp / f"milvus-{place}.db")})
                gets = s3.gets("bench/drops/bench/")
                out[f"{place}_first_seconds"] = round(_materialize(instance), 2)
                middle = s3.gets("bench/drops/bench/")
                out[f"{place}_rerun_seconds"] = round(_materialize(instance), 2)
                if place == "bucket":
                    out["bucket_first_image_gets"] = middle - gets
                    out["bucket_rerun_image_gets"] = s3.gets("bench/drops/bench/") - middle
            if "local_first_seconds" in out and "bucket_first_seconds" in out:
                out["first_run_ratio"] = round(out["bucket_first_seconds"] / out["local_first_seconds"], 3)
            out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        finally:
            s3.stop()
    print_result(out, a.json)


if __name__ == "__main__":
    main()
