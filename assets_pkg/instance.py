"""The Dagster instance in-process runs (the CLI's, the page's revisions) are recorded in, and the bookkeeping a
daemon would otherwise do: drop partitions for the folders in DROPS_DIR, and runs of processes that died."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from .domain.processes import alive

DEFAULT_DAGSTER_HOME = "data/dagster_home"
# The instance configs ship with the code location (they are what `dagster dev` and the deployments run with):
# data files, read, not imported.
SHIPPED_INSTANCE_CONFIG = Path(__file__).parents[1] / "orchestration" / "dagster.yaml"
SHIPPED_POSTGRES_CONFIG = SHIPPED_INSTANCE_CONFIG.with_name("dagster-postgres.yaml")


def open_instance():
    """The instance at DAGSTER_HOME (default data/dagster_home), created with the shipped config if new."""
    from dagster import DagsterInstance

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path(DEFAULT_DAGSTER_HOME).resolve())
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    # Two drop-studio processes starting on a fresh DAGSTER_HOME would both create the SQLite schema
    # ("table already exists"): the first one in creates it, the others wait.
    from filelock import FileLock

    with FileLock(str(Path(home) / ".drop-studio-init.lock")):
        if not config.exists():
            # DAGSTER_PG_HOST asks for the shared PostgreSQL storage; the connection stays in the environment.
            shipped = SHIPPED_POSTGRES_CONFIG if os.environ.get("DAGSTER_PG_HOST") else SHIPPED_INSTANCE_CONFIG
            shutil.copyfile(shipped, config)
        return DagsterInstance.get()


def reap_dead_runs(instance) -> list[str]:
    """Mark runs of drop-studio processes that died (killed, machine crash) as failed and free
    their pool slots. Without a daemon nothing else would, and a dead run would hold the "gpu"
    slot forever, so the next run would wait for it indefinitely."""
    from dagster import DagsterRunStatus, RunsFilter

    reaped = []
    live = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(RunsFilter(statuses=live, tags={"launched_by": "drop-studio"})):
        pid = int(run.tags.get("drop_studio/pid", "0"))
        if run.tags.get("drop_studio/host") != socket.gethostname() or not pid or alive(pid):
            continue
        instance.report_run_failed(run, f"the drop-studio process {pid} that ran it is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


def sync_drops(instance, drops_dir: str) -> tuple[list[str], list[str], list[str]]:
    """Add a partition for every drop folder; returns (all drops, newly added, invalid folder names)."""
    from assets_pkg.assets import product_drops
    from assets_pkg.domain.drops import discover_drops

    listing = discover_drops(drops_dir)
    names = [d.name for d in listing.drops]
    existing = set(instance.get_dynamic_partitions(product_drops.name))
    new = [n for n in names if n not in existing]
    if new:
        instance.add_dynamic_partitions(product_drops.name, new)
    return names, new, listing.invalid


def run_drops(part: list[str], resources: dict, instance=None, selection=None, tags: dict | None = None,
              run_config: dict | None = None):
    """One in-process run of the drop graph (the stages and their checks) for `part`: one drop's partition, or
    several neighbouring drops as a range. The CLI's runs and the page's revisions are made here, with the
    resources the caller holds (the page passes its loaded CLIP weights), tagged so reap_dead_runs can tell a
    run whose process died."""
    from dagster import materialize

    from .assets import drop_assets, drop_checks
    from .partitions import RANGE_END_TAG, RANGE_START_TAG

    one = {"partition_key": part[0]} if len(part) == 1 else {}
    span = {} if one else {RANGE_START_TAG: part[0], RANGE_END_TAG: part[-1]}
    return materialize(
        [*drop_assets, *drop_checks], selection=selection, instance=instance or open_instance(),
        resources=resources, raise_on_error=False, run_config=run_config or {},
        tags={"drop": part[0] if one else f"{part[0]}..{part[-1]}", "drops": str(len(part)),
              "launched_by": "drop-studio", "drop_studio/pid": str(os.getpid()),
              "drop_studio/host": socket.gethostname(), **span, **(tags or {})},
        **one)
