"""The Dagster code location: assets, resources and jobs of Drop Studio.

Settings come from environment variables (`EnvVar`), read when a run starts,
so secrets never land in run config. Unset variables fall back to the
embedded defaults: Milvus Lite at data/milvus.db, drops under data/drops.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, in_process_executor, multiprocess_executor

from assets_pkg.assets import drop_assets
from assets_pkg.checks import drop_checks
from assets_pkg.domain.errors import StudioError
from assets_pkg.domain.settings import DEFAULTS, setting
from assets_pkg.resources import ClipModel, DropLibrary, ImageGeneratorResource, MilvusResource

from .jobs import (
    collect_campaign_images_job,
    drop_graph_job,
    ingest_drop_job,
    refresh_catalog_job,
    regenerate_campaigns_job,
)
from .schedules import nightly_catalog_refresh, weekly_campaign_refresh
from .sensors import campaign_batches, drop_folder_sensor, references_follow_inputs


def _env(name: str):
    """EnvVar when the variable is set (resolved when a run starts), else the default."""
    if not os.environ.get(name):
        return DEFAULTS[name]
    return EnvVar.int(name) if isinstance(DEFAULTS[name], int) else EnvVar(name)


def build_resources(progress_bar: bool = False) -> dict:
    return {
        "library": DropLibrary(
            drops_dir=_env("DROPS_DIR"),
            artifacts_dir=_env("ARTIFACTS_DIR"),
            max_image_pixels=_env("MAX_IMAGE_PIXELS"),
        ),
        "clip": ClipModel(
            model=_env("CLIP_MODEL"),
            device=_env("CLIP_DEVICE"),
            batch_size=_env("CLIP_BATCH_SIZE"),
            num_workers=_env("CLIP_NUM_WORKERS"),
            fit=_env("CLIP_FIT"),
            progress_bar=progress_bar,
        ),
        "milvus": MilvusResource(
            uri=_env("MILVUS_URI"),
            token=_env("MILVUS_TOKEN"),
            collection=_env("MILVUS_COLLECTION"),
            timeout_s=_env("MILVUS_TIMEOUT_S"),
            retries=_env("MILVUS_RETRIES"),
        ),
        "generator": ImageGeneratorResource(
            api_key=_env("GEMINI_API_KEY"),
            use_vertexai=os.environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in ("1", "true"),
            model=_env("GEMINI_IMAGE_MODEL"),
            timeout_s=_env("GEMINI_TIMEOUT_S"),
            attempts=_env("GEMINI_ATTEMPTS"),
            retry_initial_delay_ms=_env("GEMINI_RETRY_INITIAL_DELAY_MS"),
            max_reference_images=_env("GEMINI_MAX_REFERENCE_IMAGES"),
            concurrency=_env("GEMINI_CONCURRENCY"),
            models_json=_env("GEMINI_MODELS"),
            image_size=_env("GEMINI_IMAGE_SIZE"),
            mode=_env("GEMINI_MODE"),
            max_cost_usd=_env("GEMINI_MAX_COST_USD"),
        ),
    }


# Modules every step of a drop may need, imported once by the forkserver instead of once per step.
# (Not pymilvus: it refuses a Milvus Lite path in MILVUS_URI at import; the store imports it carefully.)
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
    assets=drop_assets,
    asset_checks=drop_checks,
    jobs=[drop_graph_job, ingest_drop_job, refresh_catalog_job, regenerate_campaigns_job,
          collect_campaign_images_job],
    schedules=[nightly_catalog_refresh, weekly_campaign_refresh],
    sensors=[drop_folder_sensor, references_follow_inputs, campaign_batches],
    resources=build_resources(),
    executor=_executor(),
)

