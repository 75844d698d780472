"""The Dagster code location: assets, resources, jobs, schedules and sensors of Drop Studio.

The resources read their settings from environment variables when a run uses them (assets_pkg/resources.py),
falling back to the defaults in assets_pkg/domain/settings.py: Milvus Lite at data/milvus.db, drops under
data/drops.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor, multiprocess_executor

from assets_pkg.assets import drop_assets, drop_checks, search_assets
from assets_pkg.domain.errors import StudioError
from assets_pkg.domain.settings import adopt_renamed_settings, setting
from assets_pkg.resources import build_resources

from .jobs import (
    collect_campaign_images_job,
    drop_graph_job,
    ingest_drop_job,
    publish_selects_job,
    rebuild_for_model_job,
    refresh_catalog_job,
    regenerate_campaigns_job,
    search_references_job,
    switch_search_model_job,
)
from .schedules import nightly_catalog_refresh, weekly_campaign_refresh
from .sensors import (batch_split, campaign_batches, campaign_reviews, drop_folder_sensor, model_changes,
                      references_follow_inputs)


adopt_renamed_settings()  # MILVUS_URI of earlier releases, before any step imports pymilvus

# Modules every step of a drop may need, imported once by the forkserver instead of once per step.
PRELOAD = ["torch", "clip", "pandas", "pyarrow.parquet", "orchestration.definitions"]


def _executor():
    """How a launched run executes its steps (DAGSTER_EXECUTOR):

    - in_process (default): every step of the run in the run's own process. A drop's steps run one
      after the other anyway, so this costs one interpreter, one import of torch and one model load
      per run, where the multiprocess executor pays all three again in every step's process.
    - multiprocess: a process per step, started fresh (Dagster's default).
    - forkserver: a process per step, forked from a server that has the heavy modules imported.
    - k8s (deploy/helm): a pod per step, so only the embedding step asks for a GPU node.
    The `gpu` pool limits embedding to one drop at a time under every executor.
    """
    kind = setting("DAGSTER_EXECUTOR")
    if kind == "in_process":
        return in_process_executor
    if kind == "multiprocess":
        return multiprocess_executor
    if kind == "forkserver":
        return multiprocess_executor.configured(
            {"start_method": {"forkserver": {"preload_modules": PRELOAD}}}, name="forkserver_executor"
        )
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor  # the `k8s` extra

        return k8s_job_executor
    raise StudioError(f"DAGSTER_EXECUTOR={kind!r}: use in_process, multiprocess, forkserver or k8s")


defs = Definitions(
    assets=[*drop_assets, *search_assets],
    asset_checks=drop_checks,
    jobs=[drop_graph_job, ingest_drop_job, refresh_catalog_job, regenerate_campaigns_job,
          collect_campaign_images_job, publish_selects_job, rebuild_for_model_job, switch_search_model_job,
          search_references_job],
    schedules=[nightly_catalog_refresh, weekly_campaign_refresh],
    sensors=[drop_folder_sensor, model_changes, references_follow_inputs, campaign_batches, campaign_reviews,
             batch_split],
    resources=build_resources(),
    executor=_executor(),
)

