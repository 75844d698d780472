"""What opening a Milvus Lite file costs: open, count the rows and close, as each step of a run and each
search does.

    python benchmarks/lite_open.py --times 20

Milvus Lite starts a server process per file opened; Drop Studio waits for its socket instead of
milvus-lite's fixed half second (domain/milvus.py). Prints the median and the slowest.
"""

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_pkg.domain.store import ImageCollection  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=20)
    args = parser.parse_args()
    uri = str(Path(tempfile.mkdtemp()) / "milvus.db")
    with ImageCollection(uri, None, "bench") as store:
        store.ensure_collection(8)
    took = []
    for _ in range(args.times):
        start = time.perf_counter()
        with ImageCollection(uri, None, "bench") as store:
            store.count()
        took.append(time.perf_counter() - start)
    print(f"open, count and close a Milvus Lite file: median {statistics.median(took):.3f} s, "
          f"slowest {max(took):.3f} s ({args.times} times)")


if __name__ == "__main__":
    main()
