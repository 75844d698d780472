"""Runs as Dagster launches them: `dagster dev` (webserver + daemon) on the shipped workspace and instance
config, in a temporary world, the drop sensor launching the runs. Reports each run's wall time (from the
launcher starting it to its end) against the sum of its steps' own durations.

    python benchmarks/launched_runs.py --model data/models/vit-b-32-shaped.pt [--executor in_process]

Phases: (1) three sample drops of --images openclipart pictures each are there at start; (2) one file
added to a drop; (3) a drop whose files were touched but not changed (a refresh with nothing to do).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from report import print_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import DagsterDev, run_timings, wait_for_runs  # noqa: E402

DROPS = ("fruit-stand", "drinkware", "sports-gear")


def _copy_drop(name: str, dest: Path, n: int) -> list[Path]:
    """The sample drop with its briefs and products.csv, and n pictures: those of the products its briefs
    name first (a brief naming a SKU with no picture would fail, as it should), then in name order."""
    import csv

    import yaml

    src = ROOT / "data" / "drops" / name
    dest.mkdir(parents=True)
    for f in ("briefs.yaml", "products.csv"):
        if (src / f).exists():
            shutil.copy(src / f, dest / f)
    named = {sku for b in yaml.safe_load((src / "briefs.yaml").read_text())["briefs"] for sku in b.get("products", [])}
    rows = list(csv.DictReader((src / "products.csv").open())) if (src / "products.csv").exists() else []
    first = {r["file"] for r in rows if r["sku"] in named}
    pictures = sorted(src.glob("*.png"), key=lambda p: (p.name not in first, p.name))
    for p in pictures[:n]:
        shutil.copy(p, dest / p.name)
    return pictures[n:]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "data" / "models" / "vit-b-32-shaped.pt"))
    p.add_argument("--executor", default="in_process", choices=["in_process", "multiprocess", "forkserver"])
    p.add_argument("--images", type=int, default=6, help="pictures per drop")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    from dagster import DagsterInstance, DagsterRunStatus

    with tempfile.TemporaryDirectory(prefix="launched-runs-") as tmp:
        tmp = Path(tmp)
        home = tmp / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
        spare = {d: _copy_drop(d, tmp / "drops" / d, a.images) for d in DROPS}
        env = {**os.environ, "DAGSTER_HOME": str(home), "DROPS_DIR": str(tmp / "drops"),
               "ARTIFACTS_DIR": str(tmp / "artifacts"), "DROP_STUDIO_MILVUS_URI": str(tmp / "milvus.db"),
               "CLIP_MODEL": str(Path(a.model).resolve()), "DAGSTER_EXECUTOR": a.executor,
               "DROP_SENSOR_INTERVAL_S": "5", "AUTOMATION_INTERVAL_S": "5"}
        for secret in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "MILVUS_TOKEN"):
            env.pop(secret, None)
        os.environ["DAGSTER_HOME"] = str(home)

        def finished(n):
            def done(runs):
                ended = [r for r in runs if r.is_finished]
                return ended if len(ended) >= n and len(ended) == len(runs) else None
            return done

        rows = []
        with DagsterDev(env, tmp / "dagster-dev.log"), DagsterInstance.get() as instance:
            start = time.time()
            wait_for_runs(instance, finished(len(DROPS)), a.timeout, "the sensor's first runs")
            first_phase = time.time() - start
            phases = [("new drop", None)]
            shutil.copy(spare["drinkware"][0], tmp / "drops" / "drinkware" / spare["drinkware"][0].name)
            phases.append(("one file added", wait_for_runs(instance, finished(len(DROPS) + 1), a.timeout,
                                                           "the run for an added file")))
            for f in (tmp / "drops" / "fruit-stand").iterdir():
                os.utime(f)  # new modification times, same bytes: a refresh with nothing to do
            phases.append(("unchanged drop", wait_for_runs(instance, finished(len(DROPS) + 2), a.timeout,
                                                           "the run for a touched drop")))
            time.sleep(12)  # two automation ticks: nothing may follow a refresh that changed nothing
            for run in reversed(instance.get_runs()):
                t = run_timings(instance, run.run_id)
                rows.append({"drop": run.tags.get("dagster/partition") or run.tags.get("drop"), "trigger": run.tags.get("trigger",
                             "automation"), "job": run.job_name, "ok": run.status == DagsterRunStatus.SUCCESS, **t,
                             "wall_per_step_time": round(t["wall_s"] / t["steps_s"], 2) if t["steps_s"] else None,
                             "without_gpu_wait": round((t["wall_s"] - t["gpu_wait_s"]) / t["steps_s"], 2)
                             if t["steps_s"] else None})
    for r in rows:
        print(f"{r['drop']:>12} {r['trigger']:<22} {r['job']:<16} ok={r['ok']!s:<5} wall {r['wall_s']:6.2f} s  "
              f"steps {r['steps_s']:6.2f} s  x{r['wall_per_step_time']}  gpu wait {r['gpu_wait_s']:5.2f} s  "
              f"start-up {r['startup_s']:5.2f} s  x{r['without_gpu_wait']} without the wait", file=sys.stderr)
    ratios = [r["wall_per_step_time"] for r in rows if r["wall_per_step_time"]]
    unchanged = [r["wall_s"] for r in rows if r["trigger"] == "content changed" and r["drop"] == "fruit-stand"]
    print_result({
        "executor": a.executor, "model": Path(a.model).name, "images_per_drop": a.images, "runs": len(rows),
        "all_succeeded": all(r["ok"] for r in rows),
        "median_wall_per_step_time": statistics.median(ratios) if ratios else None,
        "max_wall_per_step_time": max(ratios) if ratios else None,
        "median_without_gpu_wait": statistics.median([r["without_gpu_wait"] for r in rows if r["without_gpu_wait"]]
                                                     or [None]),
        "unchanged_refresh_wall_s": unchanged[-1] if unchanged else None,
        "first_three_drops_s": round(first_phase, 1),
        "runs_detail": rows if a.json else len(rows),
    }, a.json)


if __name__ == "__main__":
    main()
