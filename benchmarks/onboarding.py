"""Onboarding many drops at once, against the same pictures as one drop.

    python benchmarks/onboarding.py --model data/models/vit-b-32-shaped.pt [--drops 30 --pictures 10]

Makes --drops x --pictures distinct photo-like JPEGs (benchmarks/make_images.py), then measures, each in a
fresh world (DAGSTER_HOME, Milvus Lite file, artifacts):
- `single`: one drop holding all the pictures, through `drop-studio run` (wall and peak RSS);
- `batched`: the drops through one `drop-studio run` (runs of DROP_BATCH drops; wall and peak RSS);
- `one_by_one`: the same with DROP_BATCH=1, one Dagster run per drop in the same process (the old way);
- `sensor`: `dagster dev` started with the drops present and nothing else: from its start until every
  drop's reference_images is materialized, how many runs the sensor launched, when `dagster dev` answered,
  and each run's creation, start and end (seconds from `dagster dev`'s start).
- `noop_refresh`: `drop-studio run --drop <one drop>` again with nothing changed, against `import dagster`.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import print_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import DagsterDev, wait_for_runs  # noqa: E402


def world(tmp: Path, name: str, model: str, **extra) -> dict:
    home = tmp / name / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "ARTIFACTS_DIR": str(tmp / name / "artifacts"),
           "DROP_STUDIO_MILVUS_URI": str(tmp / name / "milvus.db"), "CLIP_MODEL": model, **extra}
    for secret in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "MILVUS_TOKEN"):
        env.pop(secret, None)
    return env


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "data" / "models" / "vit-b-32-shaped.pt"))
    p.add_argument("--drops", type=int, default=30)
    p.add_argument("--pictures", type=int, default=10)
    p.add_argument("--size", default="640x480")
    p.add_argument("--skip", default="", help="comma-separated phases to leave out")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    model = str(Path(a.model).resolve())
    skip = set(filter(None, a.skip.split(",")))
    result = {"drops": a.drops, "pictures_per_drop": a.pictures}

    with tempfile.TemporaryDirectory(prefix="onboarding-") as tmp:
        tmp = Path(tmp)
        pool = tmp / "pool"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_images.py"), "--out", str(pool),
                        "--count", str(a.drops * a.pictures), "--size", a.size], check=True,
                       capture_output=True)
        pictures = sorted(pool.glob("*.jpg"))
        one = tmp / "one" / "everything"
        one.mkdir(parents=True)
        many = tmp / "many"
        for k, pic in enumerate(pictures):
            shutil.copy(pic, one / pic.name)
            drop = many / f"drop-{k // a.pictures:03}"
            drop.mkdir(parents=True, exist_ok=True)
            shutil.copy(pic, drop / pic.name)

        # Peak RSS is per process: each measured command runs in a process of its own (a fresh
        # interpreter measuring one child at a time).
        def measured(env, *args):
            code = ("import resource,subprocess,sys,time;s=time.perf_counter();"
                    "subprocess.run(sys.argv[1:],check=True,capture_output=True);"
                    "print(time.perf_counter()-s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "assets_pkg.cli", *args],
                                 env=env, cwd=ROOT, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"drop-studio {' '.join(args)} failed:\n{out.stderr[-3000:]}")
            wall, rss = out.stdout.split()
            return round(float(wall), 1), round(int(rss) / 1024)

        if "single" not in skip:
            env = world(tmp, "single", model, DROPS_DIR=str(tmp / "one"))
            result["single_run_s"], result["single_peak_mb"] = measured(env, "run")
            if "noop_refresh" not in skip:
                walls = [measured(env, "run", "--drop", "everything")[0] for _ in range(3)]
                imports = []
                for _ in range(3):
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-c", "import dagster"], check=True, env=env)
                    imports.append(time.perf_counter() - start)
                result["noop_refresh_s"] = statistics.median(walls)
                result["import_dagster_s"] = round(statistics.median(imports), 2)
                result["noop_refresh_vs_import"] = round(result["noop_refresh_s"] / result["import_dagster_s"], 2)
        if "batched" not in skip:
            env = world(tmp, "batched", model, DROPS_DIR=str(many), DROP_BATCH=str(a.drops))
            result["batched_run_s"], result["batched_peak_mb"] = measured(env, "run")
        if "one_by_one" not in skip:
            env = world(tmp, "one_by_one", model, DROPS_DIR=str(many), DROP_BATCH="1")
            result["one_by_one_s"], result["one_by_one_peak_mb"] = measured(env, "run")
        if "sensor" not in skip:
            from dagster import AssetKey, DagsterInstance

            env = world(tmp, "sensor", model, DROPS_DIR=str(many), DROP_SENSOR_INTERVAL_S="5",
                        AUTOMATION_INTERVAL_S="5")
            os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
            names = sorted(d.name for d in many.iterdir())
            start = time.perf_counter()
            with DagsterDev(env, tmp / "sensor" / "dagster-dev.log"):
                result["sensor_dagster_dev_ready_s"] = round(time.perf_counter() - start, 1)
                started = time.time() - (time.perf_counter() - start)
                instance = DagsterInstance.get()
                wait_for_runs(instance, lambda runs: set(names) <= instance.get_materialized_partitions(
                    AssetKey("reference_images")) and all(r.is_finished for r in runs), a.timeout,
                    "every drop's references", poll=0.5)
                result["sensor_all_done_s"] = round(time.perf_counter() - start, 1)
                runs = instance.get_runs()
                result["sensor_runs"] = len(runs)
                result["sensor_runs_failed"] = sum(not r.is_success for r in runs)
                # Where the time went: each run's queue wait and its own length, from the run records.
                records = sorted(instance.get_run_records(), key=lambda r: r.create_timestamp.timestamp())
                result["sensor_first_run_created_s"] = round(records[0].create_timestamp.timestamp() - started, 1)
                result["sensor_runs_timeline"] = [
                    {"created_s": round(r.create_timestamp.timestamp() - started, 1),
                     "started_s": round(r.start_time - started, 1) if r.start_time else None,
                     "ended_s": round(r.end_time - started, 1) if r.end_time else None} for r in records]
        if "single_run_s" in result and "sensor_all_done_s" in result:
            result["sensor_vs_single"] = round(result["sensor_all_done_s"] / result["single_run_s"], 2)
        if "single_peak_mb" in result and "batched_peak_mb" in result:
            result["batched_vs_single_peak"] = round(result["batched_peak_mb"] / result["single_peak_mb"], 2)
    print_result(result, a.json)


if __name__ == "__main__":
    main()
