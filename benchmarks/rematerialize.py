"""Cost of re-materializing an unchanged drop versus its first materialization (whole graph, with checks).

    python benchmarks/make_images.py --out /tmp/bench-1000 --count 1000 --size 800x600
    python benchmarks/rematerialize.py --images /tmp/bench-1000 --model data/models/vit-b-32-shaped.pt

`--via cli` (default) times `drop-studio run --drop bench` as a user runs it: a fresh process each time,
imports and instance included, with the process's peak RSS; the unchanged re-run is the median of
`--repeat` runs (this machine's timings wander by a second from one run to the next). `--via in-process` times Dagster's
`materialize` twice in this process (imports paid once, before the first).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from report import bench_world, print_result

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]


def _cli_run(env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one `drop-studio run`."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "assets_pkg.cli", "run", "--drop", "bench", "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"drop-studio run failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--via", choices=["cli", "in-process"], default="cli")
    p.add_argument("--repeat", type=int, default=3, help="unchanged re-runs; their median is reported")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        drop = bench_world(tmp, a.images, a.model)
        images = len(list(drop.iterdir()))
        out = {"images": images, "model": a.model, "via": a.via}
        if a.via == "cli":
            first, first_rss = _cli_run(dict(os.environ))
            again = [_cli_run(dict(os.environ)) for _ in range(a.repeat)]
            second, second_rss = statistics.median(t for t, _ in again), max(m for _, m in again)
            out.update(first_rss_mb=round(first_rss), second_rss_mb=round(second_rss),
                       reruns_seconds=[round(t, 2) for t, _ in again])
        else:
            from dagster import DagsterInstance, materialize

            from assets_pkg.assets import drop_assets
            from assets_pkg.assets import drop_checks
            from orchestration.definitions import build_resources

            instance = DagsterInstance.ephemeral()
            instance.add_dynamic_partitions("product_drops", ["bench"])
            times = []
            for _ in range(1 + a.repeat):
                start = time.perf_counter()
                result = materialize([*drop_assets, *drop_checks], partition_key="bench", instance=instance,
                                     resources=build_resources())
                times.append(time.perf_counter() - start)
                assert result.success
            first, second = times[0], statistics.median(times[1:])
        from assets_pkg.domain.artifacts import read_json

        encoded = read_json(Path(tmp) / "artifacts" / "bench" / "embeddings.json", {}).get("rows")

    out.update(first_seconds=round(first, 2), second_seconds=round(second, 2), ratio=round(second / first, 4),
               vectors=encoded)
    print_result(out, a.json)


if __name__ == "__main__":
    main()
