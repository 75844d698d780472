"""Dagster on PostgreSQL with the multiprocess executor, as a team runs it: the shipped
`orchestration/dagster-postgres.yaml`, a real PostgreSQL server on loopback, two drops at once,
and the "gpu" pool still letting one embedding step run at a time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterInstance

from conftest import BRIEFS, ROOT, draw_drop
from servers import RUN_WAIT_S, PostgresServer, Unavailable, unavailable

pytestmark = pytest.mark.services  # starts real servers: left out of `make test-fast`


@pytest.fixture(scope="module")
def postgres():
    root = Path(tempfile.mkdtemp(prefix="drop-studio-pg-"))
    try:
        server = PostgresServer(root).start()
    except Unavailable as e:
        unavailable(str(e))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_shipped_instance_configs_differ_only_in_storage():
    sqlite = yaml.safe_load((ROOT / "orchestration" / "dagster.yaml").read_text())
    pg = yaml.safe_load((ROOT / "orchestration" / "dagster-postgres.yaml").read_text())
    assert pg.pop("storage") == {"postgres": {"postgres_db": {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"}, "scheme": "postgresql+psycopg2"}}}
    assert pg == sqlite


def _events(instance, run_id, step_key, kind=None):
    return [e for e in instance.all_logs(run_id, of_type=kind) if e.step_key == step_key]


def test_graph_on_postgres_with_the_multiprocess_executor(studio, postgres, monkeypatch):
    for k, v in postgres.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAGSTER_EXECUTOR", "multiprocess")  # the default is in_process; this is the other choice
    home = studio.root / "pg_home"
    home.mkdir()
    shutil.copyfile(ROOT / "orchestration" / "dagster-postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    draw_drop(studio.drops / "spring", briefs=BRIEFS)
    draw_drop(studio.drops / "summer", spec=[("red", "circle", 3), ("blue", "square", 2)], briefs=BRIEFS)

    with DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions("product_drops", ["spring", "summer"])
        # Hold the only "gpu" slot, as a run embedding another drop would.
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("gpu")
        holder = str(uuid.uuid4())
        assert storage.claim_concurrency_slot("gpu", holder, "clip_embeddings").is_claimed

        # Two runs at once, each its own process as the run launcher starts them; the job's default
        # executor (DAGSTER_EXECUTOR=multiprocess) runs every step in a process of its own.
        runs = [subprocess.Popen(
            [sys.executable, "-m", "dagster", "job", "execute", "-m", "orchestration.definitions", "-j", "drop_graph",
             "--tags", json.dumps({"dagster/partition": drop})],
            cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ) for drop in ("spring", "summer")]
        try:
            # Both runs reach the embedding step and wait for the slot.
            deadline = time.time() + RUN_WAIT_S
            while True:
                blocked = {r.run_id for r in instance.get_runs()
                           for e in _events(instance, r.run_id, "clip_embeddings", DagsterEventType.ENGINE_EVENT)
                           if e.message.startswith("Step blocked by limit for pool gpu")}
                if len(blocked) == 2 or time.time() > deadline or any(p.poll() is not None for p in runs):
                    break
                time.sleep(1)
            assert len(blocked) == 2, "both runs should wait on the gpu pool"
            for run_id in blocked:
                assert not _events(instance, run_id, "clip_embeddings", DagsterEventType.STEP_START)
            released = time.time()
            storage.free_concurrency_slots_for_run(holder)
            outputs = [p.communicate(timeout=RUN_WAIT_S)[0] for p in runs]
        finally:
            for p in runs:
                p.kill()
        assert [p.returncode for p in runs] == [0, 0], outputs[-1][-3000:]

        spans = []
        for run in instance.get_runs():
            assert run.status.value == "SUCCESS"
            assert any("multiprocess executor" in (e.message or "")
                       for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT))
            start = _events(instance, run.run_id, "clip_embeddings", DagsterEventType.STEP_START)[0].timestamp
            end = _events(instance, run.run_id, "clip_embeddings", DagsterEventType.STEP_SUCCESS)[0].timestamp
            assert start >= released
            spans.append((start, end))
        (a0, a1), (b0, b1) = sorted(spans)
        assert a1 <= b0, "the two embedding steps overlapped despite the gpu pool"

    # A new instance (new connections) reads the materializations back from PostgreSQL.
    with DagsterInstance.get() as instance:
        for drop, images in (("spring", 24), ("summer", 5)):
            records = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=AssetKey("product_image_collection"), asset_partitions=[drop]), limit=5
            ).records
            assert len(records) == 1
            assert records[0].asset_materialization.metadata["indexed"].value == images
        assert instance.get_materialized_partitions(AssetKey("campaign_images")) == {"spring", "summer"}

    # The CLI on a fresh DAGSTER_HOME with DAGSTER_PG_HOST set picks the PostgreSQL config: same database.
    fresh = studio.root / "cli_home"
    draw_drop(studio.drops / "autumn", spec=[("green", "triangle", 1)])
    studio.cli("drops", "sync", extra_env={**postgres.env, "DAGSTER_HOME": str(fresh)})
    assert (fresh / "dagster.yaml").read_text() == (ROOT / "orchestration" / "dagster-postgres.yaml").read_text()
    with DagsterInstance.get() as instance:
        assert set(instance.get_dynamic_partitions("product_drops")) == {"spring", "summer", "autumn"}
