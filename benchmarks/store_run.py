"""Whole runs of a drop made from a store's feed against the same pictures in a folder: `drop-studio run` end
to end (fetch, scan, encode, index, search), first and again with nothing changed.

    python benchmarks/make_images.py --out /tmp/bench-10k --count 10000 --size 640x480
    python benchmarks/store_run.py --images /tmp/bench-10k

Serves the pictures from a local HTTP server (benchmarks/store_import.py's: ETags, requests in flight and
bytes sent counted) and writes a Merchant Center TSV feed naming two pictures per row. Each drop runs in a
world of its own (its own artifacts, Milvus Lite file and Dagster home), so neither reuses the other's
vectors. The CLIP model is CLIP_MODEL, else the repo's tiny checkpoint: the smaller the model, the larger the
share of fetching in a run, so the tiny model is the hard case for the ratio.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_import import served_feed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def world(base: Path, name: str) -> dict:
    root = base / name
    (root / "drops" / "bench").mkdir(parents=True)
    return {**os.environ, "DROPS_DIR": str(root / "drops"), "ARTIFACTS_DIR": str(root / "artifacts"),
            "DROP_STUDIO_MILVUS_URI": str(root / "milvus.db"), "DAGSTER_HOME": str(root / "dagster_home"),
            "PUBLISH_DIR": str(root / "publish"), "FETCH_ALLOW_HOSTS": "127.0.0.1",
            "CLIP_MODEL": os.environ.get("CLIP_MODEL", str(ROOT / "data" / "models" / "tiny-clip.pt"))}


def run(env: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "assets_pkg.cli", "run", "--drop", "bench", "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"drop-studio run failed:\n{proc.stderr[-2000:]}")
    (summary,) = json.loads(proc.stdout)
    return took, summary


def main() -> None:
    images, pictures, server, stats, text, row_count = served_feed(__doc__.splitlines()[0])
    base = Path(tempfile.mkdtemp(prefix="store-run-"))
    folder, store = world(base, "folder"), world(base, "store")
    for name in pictures:  # hard links: the folder drop holds the very files the server sends
        os.link(images / name, Path(folder["DROPS_DIR"]) / "bench" / name)
    (Path(store["DROPS_DIR"]) / "bench" / "store-export.tsv").write_text(text)

    folder_first, f1 = run(folder)
    store_first, s1 = run(store)
    sent, peak = stats["bytes"], stats["max_in_flight"]
    stats.update(bytes=0, requests=0)
    store_again, s2 = run(store)
    again_requests, again_bytes = stats["requests"], stats["bytes"]
    folder_again, f2 = run(folder)
    n = len(pictures)
    print(f"{row_count} rows naming {n} pictures ({sent / 1e6:.0f} MB), CLIP_MODEL={Path(store['CLIP_MODEL']).name}")
    print(f"first run: folder {folder_first:.1f} s ({f1['encoded']} encoded), store {store_first:.1f} s "
          f"({s1['encoded']} encoded, {s1['images']} pictures, at most {peak} in flight): "
          f"{store_first / folder_first:.2f}x")
    print(f"again, nothing changed: folder {folder_again:.1f} s ({f2['encoded']} encoded), store {store_again:.1f} s "
          f"({s2['encoded']} encoded, {again_requests} requests, {again_bytes} bytes): "
          f"{(store_again - folder_again) / n * 1000:+.2f} ms per picture")
    server.shutdown()


if __name__ == "__main__":
    main()
