"""The Dagster code location: assets, resources and jobs of Drop Studio.

Settings come from environment variables (`EnvVar`), read when a run starts,
so secrets never land in run config. Unset variables fall back to the
embedded defaults: Milvus Lite at data/milvus.db, drops under data/drops.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar

from assets_pkg.assets import drop_assets
from assets_pkg.checks import drop_checks
from assets_pkg.domain.settings import DEFAULTS
from assets_pkg.resources import ClipModel, DropLibrary, ImageGeneratorResource, MilvusResource

from .jobs import drop_graph_job, refresh_catalog_job, regenerate_campaigns_job
from .schedules import nightly_catalog_refresh, weekly_campaign_refresh
from .sensors import drop_folder_sensor


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
            prices_json=_env("GEMINI_PRICES"),
        ),
    }


def _executor():
    """DAGSTER_EXECUTOR=k8s (set in deploy/helm) runs each step in its own Kubernetes pod, so only the
    embedding step asks for a GPU node; otherwise Dagster's default (multiprocess for launched runs)."""
    if os.environ.get("DAGSTER_EXECUTOR") == "k8s":
        from dagster_k8s import k8s_job_executor  # the `k8s` extra

        return k8s_job_executor
    return None


defs = Definitions(
    assets=drop_assets,
    asset_checks=drop_checks,
    jobs=[drop_graph_job, refresh_catalog_job, regenerate_campaigns_job],
    schedules=[nightly_catalog_refresh, weekly_campaign_refresh],
    sensors=[drop_folder_sensor],
    resources=build_resources(),
    executor=_executor(),
)

