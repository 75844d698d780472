"""How every benchmark prints its result: JSON with --json, else one aligned `key: value` line each."""

import json
import os
from pathlib import Path


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")


def bench_world(tmp: str, images: str, model: str) -> Path:
    """A studio under `tmp` whose drop `bench` is hard links to the pictures in `images` (a real drop
    folder without copying the bytes), with its settings in os.environ; the drop folder."""
    root = Path(tmp)
    drop = root / "drops" / "bench"
    drop.mkdir(parents=True)
    for f in sorted(Path(images).iterdir()):
        os.link(f, drop / f.name)
    os.environ.update({
        "DROPS_DIR": str(root / "drops"), "ARTIFACTS_DIR": str(root / "artifacts"),
        "DROP_STUDIO_MILVUS_URI": str(root / "milvus.db"), "PUBLISH_DIR": str(root / "publish"),
        "CLIP_MODEL": str(Path(model).resolve()) if Path(model).is_file() else model,
        "DAGSTER_HOME": str(root / "dagster_home"),
    })
    return drop
