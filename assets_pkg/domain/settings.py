"""Settings from environment variables, with the embedded defaults in one place.

The Dagster definitions wrap these in `EnvVar` (resolved when a run starts);
the CLI and benchmarks read them directly.
"""

from __future__ import annotations

import os

from .image_models import DEFAULT_GEMINI_IMAGE_MODEL

DEFAULTS: dict[str, str | int | None] = {
    "DROPS_DIR": "data/drops",
    "ARTIFACTS_DIR": "data/artifacts",
    "MAX_IMAGE_PIXELS": 64_000_000,
    "CLIP_MODEL": "ViT-B/32",
    "CLIP_DEVICE": "auto",
    "CLIP_BATCH_SIZE": 0,
    "CLIP_NUM_WORKERS": -1,
    "CLIP_FIT": "pad",
    "MILVUS_URI": "data/milvus.db",
    "MILVUS_TOKEN": None,
    "MILVUS_COLLECTION": "product_images",
    "MILVUS_TIMEOUT_S": 30,
    "MILVUS_RETRIES": 4,
    "GEMINI_API_KEY": None,
    "GEMINI_IMAGE_MODEL": DEFAULT_GEMINI_IMAGE_MODEL,
    "GEMINI_TIMEOUT_S": 120,
    "GEMINI_ATTEMPTS": 4,
    "GEMINI_RETRY_INITIAL_DELAY_MS": 1000,
    "GEMINI_MAX_REFERENCE_IMAGES": 0,
    "GEMINI_CONCURRENCY": 2,
    "GEMINI_MODELS": None,  # JSON merged over the built-in model table (image_models.py)
    "GEMINI_IMAGE_SIZE": "1K",
    "GEMINI_MODE": "interactive",  # or batch: one Batch API job per run, half the price, results within 24 h
    "GEMINI_MAX_COST_USD": None,  # per run; unset: no cap
    "GEMINI_BATCH_POLL_S": 300,
    # How Dagster runs the steps of a launched run: in_process (default), multiprocess, forkserver, k8s.
    "DAGSTER_EXECUTOR": "in_process",
    "DROP_SENSOR_INTERVAL_S": 30,
    "AUTOMATION_INTERVAL_S": 30,
    "REFRESH_CATALOG_CRON": "0 2 * * *",  # nightly at 02:00
    "REGENERATE_CAMPAIGNS_CRON": "0 6 * * 1",  # Mondays at 06:00
}
SECRETS = frozenset({"MILVUS_TOKEN", "GEMINI_API_KEY"})


def setting(name: str):
    """The variable's value, typed like its default, or the default when unset or empty."""
    default = DEFAULTS[name]
    raw = os.environ.get(name)
    if not raw:
        return default
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            from .errors import StudioError

            raise StudioError(f"{name}={raw!r} is not an integer") from None
    return raw


def encoder_from_env():
    from .encoder import ClipEncoder

    return ClipEncoder(
        setting("CLIP_MODEL"), setting("CLIP_DEVICE"), setting("CLIP_BATCH_SIZE"), setting("CLIP_NUM_WORKERS"),
        setting("CLIP_FIT"),
    )


def store_from_env():
    from .store import ProductImageStore

    return ProductImageStore(setting("MILVUS_URI"), setting("MILVUS_TOKEN"), setting("MILVUS_COLLECTION"),
                             timeout=setting("MILVUS_TIMEOUT_S"), retries=setting("MILVUS_RETRIES"))
