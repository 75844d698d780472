"""Every setting is an environment variable with its one default, here.

The Dagster resources read them when a run uses them (a field left unset in
run config falls back to its variable, then to this default), and so does the
CLI: there is no second copy of a default anywhere else.
"""

from __future__ import annotations

import functools
import logging
import os

from .image_models import DEFAULT_GEMINI_IMAGE_MODEL

DEFAULTS: dict[str, str | int | None] = {
    "DROPS_DIR": "data/drops",
    "ARTIFACTS_DIR": "data/artifacts",
    "BASE_IMAGES_DIR": None,  # base images briefs share (`base_image:`), besides those in a drop's own folder
    "PUBLISH_DIR": "data/publish",  # approved campaign images with their manifests: a folder or a bucket URL
    # The brand's C2PA signing certificate chain (PEM, leaf first) and its private key (PEM): files or bucket
    # URLs, read when a run publishes renditions and never logged or copied. Unset: renditions go unsigned.
    "C2PA_SIGN_CERT": None,
    "C2PA_PRIVATE_KEY": None,
    # Campaign image scores (stages/campaigns/scores.py): fixed floors in place of the drop's own rules, and
    # whether a flagged image may be published at all.
    "SCORE_FIDELITY_MIN": None,
    "SCORE_PROMPT_MIN": None,
    "PUBLISH_REQUIRES_SCORES": False,
    "MAX_IMAGE_PIXELS": 64_000_000,
    # Pictures fetched by URL from a store's export (domain/storefront): the largest body taken, and the hosts
    # whose non-public addresses may be fetched from (comma-separated; none by default).
    "FETCH_MAX_BYTES": 50_000_000,
    "FETCH_ALLOW_HOSTS": None,
    "CLIP_MODEL": "ViT-B/32",
    "CLIP_DEVICE": "auto",
    "CLIP_BATCH_SIZE": 0,
    "CLIP_NUM_WORKERS": -1,
    "CLIP_FIT": "pad",
    # After CLIP_MODEL changes, search moves to the new model once every drop is built for it (auto), or when
    # you materialize search_model / run `drop-studio models switch` (manual: compare the two first).
    "MODEL_SWITCH": "auto",
    # A Milvus Lite file or a server URL. Not MILVUS_URI: pymilvus reads that name itself when imported and
    # refuses a file path there, which would break a plain `import pymilvus` in a user's own script.
    "DROP_STUDIO_MILVUS_URI": "data/milvus.db",
    "MILVUS_TOKEN": None,
    "MILVUS_COLLECTION": "product_images",
    "MILVUS_TIMEOUT_S": 30,
    "MILVUS_RETRIES": 4,
    "GEMINI_API_KEY": None,
    "GOOGLE_GENAI_USE_VERTEXAI": False,  # Vertex AI instead of an API key (the SDK reads its own GOOGLE_* variables)
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
    # `drop-studio serve`: the bearer token its API wants (a secret); required to bind beyond loopback.
    "DROP_STUDIO_TOKEN": None,
    "SEARCH_HOST": "127.0.0.1",  # loopback; anything else needs DROP_STUDIO_TOKEN
    "SEARCH_PORT": 8787,
    "DROP_SENSOR_INTERVAL_S": 30,
    "REVIEW_SENSOR_INTERVAL_S": 30,
    # Drops per run when many need work at once (sensor, schedules, UI backfills); README has the measurements.
    "DROP_BATCH": 10,
    "AUTOMATION_INTERVAL_S": 30,
    "REFRESH_CATALOG_CRON": "0 2 * * *",  # nightly at 02:00
    "REGENERATE_CAMPAIGNS_CRON": "0 6 * * 1",  # Mondays at 06:00
}


# Settings renamed since an earlier release (new name -> old name): the old one still works, with a notice.
RENAMED = {"DROP_STUDIO_MILVUS_URI": "MILVUS_URI"}


@functools.cache
def _say_renamed(old: str, new: str) -> None:
    logging.getLogger(__name__).warning("%s is deprecated: name it %s (the old name keeps working for now)", old, new)


def _raw(name: str) -> str | None:
    raw = os.environ.get(name)
    old = RENAMED.get(name)
    if not raw and old and os.environ.get(old):
        _say_renamed(old, name)
        return os.environ[old]
    return raw


def adopt_renamed_settings() -> None:
    """For our own processes only (the CLI, the Dagster code location), before anything imports pymilvus:
    a setting still under its old name moves to its new one, with the one-line notice. pymilvus reads
    MILVUS_URI itself at import and refuses a Milvus Lite path there, so the old name cannot stay set in a
    process that imports it. The library itself never changes the environment."""
    for new, old in RENAMED.items():
        if os.environ.get(old) and not os.environ.get(new):
            _say_renamed(old, new)
            os.environ[new] = os.environ.pop(old)


def setting(name: str):
    """The variable's value, typed like its default, or the default when unset or empty."""
    default = DEFAULTS[name]
    raw = _raw(name)
    if not raw:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            from .errors import StudioError

            raise StudioError(f"{name}={raw!r} is not an integer") from None
    return raw

