"""The drop sensor's cost at scale: DROPS_DIR with N drops of M files each (tiny files: a tick lists, it never
reads a picture), one tick that finds them all, then ticks with nothing changed, timed, and one after a
single file changed.

    python benchmarks/sensor_tick.py --drops 1000 --files 100
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from report import print_result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drops", type=int, default=1000)
    p.add_argument("--files", type=int, default=100)
    p.add_argument("--ticks", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        drops = Path(tmp) / "drops"
        for d in range(a.drops):
            folder = drops / f"drop-{d:05}"
            folder.mkdir(parents=True)
            for f in range(a.files):
                (folder / f"item_{f:04}.jpg").write_bytes(b"x")
        os.environ["DROPS_DIR"] = str(drops)
        os.environ["DAGSTER_HOME"] = str(Path(tmp) / "home")
        Path(os.environ["DAGSTER_HOME"]).mkdir()

        from dagster import DagsterInstance, build_sensor_context

        from assets_pkg.resources import DropLibrary
        from orchestration.sensors import drop_folder_sensor

        instance = DagsterInstance.get()  # SQLite on disk, as `dagster dev` has it

        def tick(cursor):
            start = time.perf_counter()
            result = drop_folder_sensor(build_sensor_context(instance=instance, cursor=cursor,
                                                             resources={"library": DropLibrary()}))
            seconds = time.perf_counter() - start
            for req in result.dynamic_partitions_requests:
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            return result, seconds

        first, first_s = tick(None)
        unchanged = []
        cursor = first.cursor
        for _ in range(a.ticks):
            result, seconds = tick(cursor)
            assert result.run_requests == []
            unchanged.append(seconds)
        (drops / "drop-00000" / "item_0000.jpg").write_bytes(b"xy")
        changed, changed_s = tick(cursor)
        assert [r.partition_key for r in changed.run_requests] == ["drop-00000"]

    print_result({
        "drops": a.drops, "files": a.drops * a.files,
        "first_tick_s": round(first_s, 2), "runs_requested_first": len(first.run_requests),
        "unchanged_tick_median_s": round(statistics.median(unchanged), 2),
        "unchanged_tick_max_s": round(max(unchanged), 2),
        "one_change_tick_s": round(changed_s, 2),
    }, a.json)


if __name__ == "__main__":
    main()
