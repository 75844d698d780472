"""Recording a decision and seeing it on the page, through `drop-studio serve`: a drop with --images campaign
images (PNG + sidecar each, as campaign_images writes them), --decisions decisions on random images, each a
`POST /api/review` followed by the `GET /api/drops/D` that shows it (checked to show it).

    python benchmarks/review_latency.py --images 1000 --decisions 300 --model data/models/tiny-clip.pt
"""

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from report import print_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import Serve  # noqa: E402


def _campaign(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 80, 60)).save(buf, "PNG")
    paths = []
    for k in range(n):
        brief, variant = f"brief-{k // 4:04d}", k % 4 + 1
        stem = brief if variant == 1 else f"{brief}.v{variant}"
        (folder / f"{stem}.png").write_bytes(buf.getvalue())
        (folder / f"{stem}.json").write_text(json.dumps({
            "brief": {"id": brief, "prompt": f"A product on a beach, take {k}", "image_size": "1K"},
            "variant": variant, "drop": "bench", "model": "gemini-3.1-flash-image", "generator": "gemini",
            "references": [{"path": f"p{k % 30}.png", "score": 0.3, "sha256": f"{k % 30:064x}", "sku": ""}],
            "image_size": "1K", "finish_reason": "STOP", "estimated_cost_usd": 0.067, "cache_key": f"{k:064x}"}))
        paths.append(f"campaign/{stem}.png")
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--decisions", type=int, default=300)
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    model = str(Path(a.model).resolve()) if Path(a.model).is_file() else a.model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "drops" / "bench").mkdir(parents=True)
        paths = _campaign(tmp / "artifacts" / "bench" / "campaign", a.images)
        env = {**os.environ, "DROPS_DIR": str(tmp / "drops"), "ARTIFACTS_DIR": str(tmp / "artifacts"),
               "DROP_STUDIO_MILVUS_URI": str(tmp / "milvus.db"), "CLIP_MODEL": model, "DAGSTER_HOME": str(tmp / "home")}
        env.pop("DROP_STUDIO_TOKEN", None)
        record, show, both = [], [], []
        with Serve(env, tmp / "serve.log") as server:
            base = server.url
            rng = random.Random(0)
            with requests.Session() as http:
                assert len(http.get(f"{base}/api/drops/bench", timeout=120).json()["campaign"]) == a.images
                for k in range(a.decisions):
                    path = rng.choice(paths)
                    decision = rng.choice(("approve", "reject"))
                    t0 = time.perf_counter()
                    r = http.post(f"{base}/api/review", json={"drop": "bench", "path": path, "decision": decision,
                                                              "note": f"note {k}", "reviewer": "bench"}, timeout=60)
                    t1 = time.perf_counter()
                    detail = http.get(f"{base}/api/drops/bench", timeout=60).json()
                    t2 = time.perf_counter()
                    shown = next(c["review"] for c in detail["campaign"] if c["path"] == path)
                    assert r.status_code == 200 and shown["decision"] == decision and shown["note"] == f"note {k}"
                    record.append(t1 - t0)
                    show.append(t2 - t1)
                    both.append(t2 - t0)

    def ms(values, q):
        return round(float(np.percentile(np.asarray(values) * 1000, q)), 1)

    print_result({
        "campaign_images": a.images, "decisions": a.decisions,
        "record_p50_ms": ms(record, 50), "record_p99_ms": ms(record, 99),
        "show_p50_ms": ms(show, 50), "show_p99_ms": ms(show, 99),
        "record_and_show_p50_ms": ms(both, 50), "record_and_show_p99_ms": ms(both, 99),
    }, a.json)


if __name__ == "__main__":
    main()
