"""`drop-studio` as a user runs it: JSON summaries, search, runs visible to Dagster, one-line errors."""

from __future__ import annotations

import json

import pytest

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

    again = studio.run_json("--drop", "spring")
    assert [(s["drop"], s["encoded"], s["reused"], s["indexed"]) for s in again] == [("spring", 0, 24, 24)]

    hits = json.loads(studio.cli("search", "a red circle", "--top-k", "3", "--json").stdout)
    assert [h["path"].rsplit("/", 1)[-1].rsplit("_", 1)[0] for h in hits] == ["red_circle"] * 3
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    in_summer = json.loads(studio.cli("search", "a red circle", "--drop", "summer", "--json").stdout)
    assert [h["drop"] for h in in_summer] == ["summer"] * 3
    assert in_summer[0]["path"].endswith("summer/red_circle_0.png")

    from dagster import DagsterInstance, RunsFilter

    instance = DagsterInstance.get()
    runs = instance.get_runs(RunsFilter(tags={"launched_by": "drop-studio"}))
    # The first `run` carried both drops in one Dagster run; each has its own materialization and counts.
    assert sorted(r.tags["drop"] for r in runs) == ["spring", "spring..summer"]
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
    proc = studio.cli("run", check=False, extra_env={"MILVUS_URI": "http://127.0.0.1:9"})
    _one_line_error(proc, "MILVUS_URI=http://127.0.0.1:9", "cannot connect to Milvus")
    proc = studio.cli("search", "a red circle", check=False, extra_env={"MILVUS_URI": "http://127.0.0.1:9"})
    _one_line_error(proc, "MILVUS_URI=http://127.0.0.1:9", "cannot connect to Milvus")


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
        (["search", "red", "--top-k", "0"], "--top-k must be from 1 to 100"),
        (["search", "red", "--drop", "../etc"], "invalid drop name '../etc'"),
        (["search", "red", "--drop", "nosuch"], "drop 'nosuch' has no images"),
        (["run", "--drop", "nosuch"], "no such drop"),
    ]:
        _one_line_error(studio.cli(*args, check=False), needle)


def test_an_unchanged_drop_is_refreshed_without_torch_or_pymilvus(studio):
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    studio.cli("run")
    # -X importtime lists every module the process imported: nothing to encode or search needs no torch.
    proc = studio.cli("run", "--json", python_args=["-X", "importtime"])
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"dagster", "pandas"} <= imported
    # Nothing to encode or search needs no torch; an unchanged Milvus Lite file needs no pymilvus either.
    assert not {"torch", "clip", "pymilvus"} & imported
    (summary,) = json.loads(proc.stdout)
    assert (summary["ok"], summary["encoded"], summary["reused"], summary["indexed"]) == (True, 0, 24, 24)
    assert len(summary["generated"]) == 2
