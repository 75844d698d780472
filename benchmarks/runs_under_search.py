"""A `drop-studio run` while the search page is busy: the demo drops (Milvus Lite, the default) run once, then
`drop-studio serve` is started and a run that adds --add pictures to a drop is timed twice: with the page
idle, and with --clients threads searching continuously. Reports both run times, their ratio, and how the
page answered meanwhile (share of 200s within 1 s, latency percentiles).

    python benchmarks/runs_under_search.py --model data/models/tiny-clip.pt [--clients 8] [--add 6] [--more-drops 12]

--more-drops N adds N drops of 30 drawn pictures each to the world first (a larger collection to search).
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from report import print_result
from search_latency import QUERIES, percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import draw_drop  # noqa: E402
from servers import Serve  # noqa: E402

SPEC = [(c, s, 5) for c in ("red", "blue", "green") for s in ("circle", "square")]  # 30 pictures



def _cli(env: dict, *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "assets_pkg.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"drop-studio {' '.join(args)} failed after {time.perf_counter() - start:.0f} s:\n"
                         f"{proc.stderr[-2000:]}")
    return round(time.perf_counter() - start, 1)


def _add_pictures(folder: Path, source: list[Path], n: int, tag: str) -> None:
    for k, p in enumerate(source[:n]):
        shutil.copy(p, folder / f"added-{tag}-{k}{p.suffix}")


class Clients:
    """`n` threads, each searching as fast as the page answers it, until stopped."""

    def __init__(self, url: str, n: int):
        self.url, self.n = url, n
        self.answers: list[tuple[int, float]] = []  # (status, seconds)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(k,), daemon=True) for k in range(n)]

    def _loop(self, k: int) -> None:
        rng = random.Random(k)
        with requests.Session() as http:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    status = http.get(self.url, params={"q": rng.choice(QUERIES), "k": 24}, timeout=60).status_code
                except requests.RequestException:
                    status = 0
                self.answers.append((status, time.perf_counter() - start))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("CLIP_MODEL", "ViT-B/32"))
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--add", type=int, default=6)
    p.add_argument("--more-drops", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    model = str(Path(a.model).resolve()) if Path(a.model).is_file() else a.model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copytree(ROOT / "data" / "drops", tmp / "drops")
        for d in range(a.more_drops):
            draw_drop(tmp / "drops" / f"shapes-{d:02d}", spec=SPEC, seed=d)
        (tmp / "home").mkdir()
        (tmp / "home" / "dagster.yaml").write_text((ROOT / "orchestration" / "dagster.yaml").read_text())
        env = {**os.environ, "DROPS_DIR": str(tmp / "drops"), "ARTIFACTS_DIR": str(tmp / "artifacts"),
               "DROP_STUDIO_MILVUS_URI": str(tmp / "milvus.db"), "CLIP_MODEL": model, "DAGSTER_HOME": str(tmp / "home"),
               "PUBLISH_DIR": str(tmp / "publish")}
        for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "DROP_STUDIO_TOKEN", "MILVUS_TOKEN"):
            env.pop(k, None)
        setup = _cli(env, "run")
        extra = sorted((ROOT / "data" / "drops" / "drinkware").glob("*.png"))
        with Serve(env, tmp / "serve.log") as server:
            url = f"{server.url}/api/search"
            assert requests.get(url, params={"q": "warm up"}, timeout=120).status_code == 200
            _add_pictures(tmp / "drops" / "fruit-stand", extra, a.add, "idle")
            idle = _cli(env, "run", "--drop", "fruit-stand")
            _add_pictures(tmp / "drops" / "fruit-stand", extra[a.add:], a.add, "busy")
            with Clients(url, a.clients) as clients:
                time.sleep(2)  # every client in its loop
                busy = _cli(env, "run", "--drop", "fruit-stand")
            answers = list(clients.answers)
    seconds = sorted(s for _, s in answers)
    ok = sum(1 for status, s in answers if status == 200 and s <= 1.0)
    print_result({
        "world": f"{3 + a.more_drops} drops (the demo's 3" + (f" + {a.more_drops} of 30 drawn pictures" if a.more_drops else "") + ")",
        "setup_run_s": setup,
        "run_idle_page_s": idle,
        f"run_with_{a.clients}_clients_s": busy,
        "ratio": round(busy / idle, 2),
        "page_requests": len(answers),
        "share_200_within_1s": round(ok / len(answers), 4) if answers else None,
        "non_200": sum(1 for status, _ in answers if status != 200),
        "latency_p50_ms": percentile(seconds, 50) if seconds else None,
        "latency_p99_ms": percentile(seconds, 99) if seconds else None,
    }, a.json)


if __name__ == "__main__":
    main()
