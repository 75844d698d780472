"""`drop-studio` as a user runs it: JSON summaries, search, runs visible to Dagster, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import BRIEFS, ROOT, draw_drop


def test_drops_sync_adds_one_partition_per_folder(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)])
    draw_drop(studio.drops / "summer", spec=[("blue", "square", 1)])
    (studio.drops / "bad name").mkdir()
    proc = studio.cli("drops", "sync")
    assert proc.stdout.split() == ["spring", "(new)", "summer", "(new)"]
    assert "'bad name'" in proc.stderr
    assert studio.cli("drops", "sync").stdout.split() == ["spring", "summer"]

    from dagster import DagsterInstance

    assert sorted(DagsterInstance.get().get_dynamic_partitions("product_drops")) == ["spring", "summer"]


def test_run_json_search_and_runs_recorded_in_the_instance(studio):
    names = draw_drop(studio.drops / "spring", briefs=BRIEFS)
    draw_drop(studio.drops / "summer", spec=[("green", "star", 2), ("red", "circle", 1)], seed=11)

    summaries = studio.run_json()
    assert [s["drop"] for s in summaries] == ["spring", "summer"]
    spring, summer = summaries
    assert {k: spring[k] for k in ("images", "encoded", "reused", "rejected", "indexed", "deleted", "briefs")} == {
        "images": len(names), "encoded": 24, "reused": 0, "rejected": [], "indexed": 24, "deleted": 0, "briefs": 2,
    }
    assert [p.rsplit("/", 1)[-1] for p in spring["generated"]] == ["blue-shelf.png", "red-hero.png"]
    assert spring["blocked"] == []
    assert (summer["images"], summer["indexed"], summer["briefs"], summer["generated"]) == (3, 3, 0, [])

    again = studio.run_json("--drop", "spring")  # nothing changed: answered without a Dagster run
    assert [(s["drop"], s["encoded"], s["reused"], s["indexed"]) for s in again] == [("spring", 0, 24, 24)]
    assert again[0]["settled_by"].startswith("the run of ")

    hits = json.loads(studio.cli("search", "a red circle", "--top-k", "3", "--json").stdout)
    assert [h["path"].rsplit("/", 1)[-1].rsplit("_", 1)[0] for h in hits] == ["red_circle"] * 3
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    in_summer = json.loads(studio.cli("search", "a red circle", "--drop", "summer", "--json").stdout)
    assert [h["drop"] for h in in_summer] == ["summer"] * 3
    assert in_summer[0]["path"].endswith("summer/red_circle_0.png")

    from dagster import DagsterInstance, RunsFilter

    instance = DagsterInstance.get()
    runs = instance.get_runs(RunsFilter(tags={"launched_by": "drop-studio"}))
    # The first `run` carried both drops in one Dagster run; each has its own materialization and counts. The
    # second had nothing to do and said so without a run.
    assert [r.tags["drop"] for r in runs] == ["spring..summer"]
    assert all(r.is_success for r in runs)
    (both,) = [r for r in runs if r.tags["drop"] == "spring..summer"]
    indexed = {m.partition: m.metadata["indexed"].value
               for m in (e.asset_materialization for e in instance.all_logs(both.run_id) if e.is_dagster_event
                         and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION")
               if m.asset_key.path == ["product_image_collection"]}
    assert indexed == {"spring": 24, "summer": 3}


def _one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert any(all(n in l for n in needles) for l in lines), proc.stderr


def test_missing_checkpoint_is_one_clear_line(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)])
    proc = studio.cli("run", check=False, extra_env={"CLIP_MODEL": "/nowhere/clip.pt"})
    _one_line_error(proc, "CLIP_MODEL='/nowhere/clip.pt'", "no such checkpoint file")


def test_a_drops_dir_that_does_not_exist_is_an_error_not_an_empty_library(studio):
    missing = str(studio.root / "no" / "such" / "folder")
    for args in (["drops", "sync"], ["run", "--json"]):
        proc = studio.cli(*args, check=False, extra_env={"DROPS_DIR": missing})
        assert proc.returncode == 2 and proc.stdout.strip() == ""
        _one_line_error(proc, f"DROPS_DIR={missing}: no such folder")
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)])
    proc = studio.cli("run", check=False, extra_env={"ARTIFACTS_DIR": "hdfs://cluster/artifacts"})
    _one_line_error(proc, "ARTIFACTS_DIR=hdfs://cluster/artifacts: unsupported URL scheme 'hdfs'")
    assert not (ROOT / "hdfs:").exists()


def test_unreachable_milvus_names_the_uri(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 1)])
    proc = studio.cli("run", check=False, extra_env={"DROP_STUDIO_MILVUS_URI": "http://127.0.0.1:9"})
    _one_line_error(proc, "DROP_STUDIO_MILVUS_URI=http://127.0.0.1:9", "cannot connect to Milvus")
    proc = studio.cli("search", "a red circle", check=False, extra_env={"DROP_STUDIO_MILVUS_URI": "http://127.0.0.1:9"})
    _one_line_error(proc, "DROP_STUDIO_MILVUS_URI=http://127.0.0.1:9", "cannot connect to Milvus")


def test_malformed_briefs_fail_the_run_with_the_file_named_and_images_indexed(studio):
    draw_drop(studio.drops / "spring", briefs="briefs:\n  - id: x\n    prompt: hi\n    top_k: -1\n    query: q\n")
    draw_drop(studio.drops / "summer", spec=[("blue", "circle", 2)], briefs=BRIEFS)
    proc = studio.cli("run", "--json", check=False)
    assert proc.returncode == 1
    summary, other = json.loads(proc.stdout)
    assert (other["drop"], other["ok"], other["indexed"], len(other["generated"])) == ("summer", True, 2, 2)
    assert summary["indexed"] == 24 and not summary["ok"]
    assert "briefs.yaml: brief 'x': top_k must be an integer from 1 to 100, got -1" in summary["error"]
    _one_line_error(proc, "spring", "briefs.yaml")


def test_search_refuses_bad_arguments_clearly(studio):
    for args, needle in [
        (["search", "  "], "query is empty"),
        (["search", "red", "--top-k", "0"], "Invalid value for '--top-k': 0 is not in the range 1<=x<=100"),
        (["search", "red", "--drop", "../etc"], "invalid drop name '../etc'"),
        (["search", "red", "--drop", "nosuch"], "drop 'nosuch' has no images"),
        (["run", "--drop", "nosuch"], "no such drop"),
    ]:
        _one_line_error(studio.cli(*args, check=False), needle)


def test_an_unchanged_drop_is_answered_without_dagster_and_a_touched_one_without_torch_or_pymilvus(studio):
    names = draw_drop(studio.drops / "spring", briefs=BRIEFS)
    studio.cli("run")

    def run_importing():
        # -X importtime lists every module the process imported.
        proc = studio.cli("run", "--json", python_args=["-X", "importtime"])
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        (summary,) = json.loads(proc.stdout)
        assert (summary["ok"], summary["encoded"], summary["reused"], summary["indexed"]) == (True, 0, 24, 24)
        assert len(summary["generated"]) == 2
        return summary, imported

    # Nothing changed since the run that settled the drop: no Dagster run, so not even Dagster is imported.
    summary, imported = run_importing()
    assert summary["settled_by"].startswith("the run of ")
    assert not {"dagster", "torch", "clip", "pymilvus"} & imported
    # A picture touched (its modification time changed, its bytes not): a Dagster run looks, and finds nothing to
    # encode or search (no torch) and an unchanged Milvus Lite file (no pymilvus).
    os.utime(studio.drops / "spring" / names[0])
    summary, imported = run_importing()
    assert "settled_by" not in summary and "dagster" in imported
    assert not {"torch", "clip", "pymilvus"} & imported


def test_a_settled_drop_runs_again_when_a_decision_a_setting_or_an_artifact_changes(studio):
    from assets_pkg.domain.artifacts import DropArtifacts
    from assets_pkg.domain.reviews import Reviews

    draw_drop(studio.drops / "spring", spec=[("red", "circle", 1), ("blue", "square", 1)], briefs=BRIEFS)
    studio.cli("run")
    assert "settled_by" in studio.run_json()[0]

    Reviews(DropArtifacts.at(studio.artifacts, "spring")).record("campaign/red-hero.png", "approve", "", "Ada")
    (decided,) = studio.run_json()  # a decision: the run publishes it
    assert "settled_by" not in decided
    assert (studio.root / "publish" / "spring" / "red-hero.png").exists()

    png = studio.artifacts / "spring" / "campaign" / "blue-shelf.png"
    png.unlink()  # an output gone: the run makes it again
    (remade,) = studio.run_json()
    assert "settled_by" not in remade and png.exists()

    limit = {"MAX_IMAGE_PIXELS": "50000000"}  # a setting a run reads: Dagster runs, and finds nothing to do
    (changed,) = studio.run_json(extra_env=limit)
    assert "settled_by" not in changed and (changed["encoded"], changed["reused"]) == (0, 2)
    assert "settled_by" in studio.run_json(extra_env=limit)[0]


# -- the Milvus setting's own name --------------------------------------------------------
RENAMED = "MILVUS_URI is deprecated: name it DROP_STUDIO_MILVUS_URI (the old name keeps working for now)"


def test_the_old_milvus_uri_name_still_runs_with_one_line_saying_so(studio):
    draw_drop(studio.drops / "spring", spec=[("red", "circle", 2), ("blue", "square", 1)])
    old = studio.root / "old-name.db"
    proc = studio.cli("run", "--json", extra_env={"DROP_STUDIO_MILVUS_URI": "", "MILVUS_URI": str(old)})
    (summary,) = json.loads(proc.stdout)
    assert summary["ok"] and summary["indexed"] == 3
    assert [line for line in proc.stderr.splitlines() if "MILVUS_URI" in line] == [RENAMED]
    from assets_pkg.domain.store import ImageCollection

    with ImageCollection(str(old)) as images:  # the rows went where the old name said
        assert images.count("spring") == 3
    assert not os.path.exists(studio.env["DROP_STUDIO_MILVUS_URI"])


_USERS_SCRIPT = """
import os
import pymilvus  # the user's own import, before and beside Drop Studio's
from assets_pkg.domain.settings import setting
from assets_pkg.domain.store import ImageCollection
before = dict(os.environ)
with ImageCollection(setting("DROP_STUDIO_MILVUS_URI")) as images:
    images.ensure_collection(4)
    print(images.count(), pymilvus.MilvusClient.__name__)
assert dict(os.environ) == before, "the library changed the environment"
"""


def test_a_users_own_import_pymilvus_works_beside_the_milvus_setting_and_the_environment_stays_as_it_was(studio):
    env = {**os.environ, **studio.env}
    env.pop("MILVUS_URI", None)
    proc = subprocess.run([sys.executable, "-c", _USERS_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["0", "MilvusClient"]
    assert os.path.exists(studio.env["DROP_STUDIO_MILVUS_URI"])


def test_a_file_path_left_in_the_old_name_is_one_line_naming_the_new_one_in_a_script(studio):
    script = ("from assets_pkg.domain.store import ImageCollection\n"
              "from assets_pkg.domain.errors import StoreError\n"
              "try:\n    ImageCollection('x.db').open()\nexcept StoreError as e:\n    print(e)\n")
    env = {**os.environ, **studio.env, "MILVUS_URI": str(studio.root / "m.db")}
    # In the studio's folder: the script's relative x.db (and its lock file) stay out of the repository.
    proc = subprocess.run([sys.executable, "-c", script], cwd=studio.root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == ("MILVUS_URI is set to something other than a server URL, which pymilvus refuses "
                                   "when imported: name Drop Studio's Milvus DROP_STUDIO_MILVUS_URI instead")
