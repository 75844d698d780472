"""Dagster resources: small configurable wrappers that hand out domain objects.

Values come from the environment through `dagster.EnvVar` (see
`orchestration/definitions.py`), so secrets such as MILVUS_TOKEN and
GEMINI_API_KEY never appear in run config, logs or metadata.
"""

from __future__ import annotations

from typing import Optional

from dagster import ConfigurableResource

from .domain.artifacts import DropArtifacts
from .domain.drops import DEFAULT_MAX_PIXELS, ProductDrop
from .domain.errors import GeneratorError
from .domain.generator import BoardGenerator, GeminiGenerator
from .domain.image_models import DEFAULT_GEMINI_IMAGE_MODEL, MODES, ImageModel, image_model
from .domain.model_id import clip_model_id
from .domain.store import DEFAULT_COLLECTION, ProductImageStore, is_lite_uri


class DropLibrary(ConfigurableResource):
    """Where drops are read from and where each step's files are written."""

    drops_dir: str = "data/drops"
    artifacts_dir: str = "data/artifacts"
    max_image_pixels: int = DEFAULT_MAX_PIXELS

    def drop(self, name: str) -> ProductDrop:
        return ProductDrop.at(self.drops_dir, name)

    def artifacts(self, name: str) -> DropArtifacts:
        return DropArtifacts.at(self.artifacts_dir, name)


class ClipModel(ConfigurableResource):
    """CLIP weights: a model name (`ViT-B/32`, downloaded on first use) or a checkpoint path."""

    model: str = "ViT-B/32"
    device: str = "auto"  # auto: CUDA when available, else CPU
    batch_size: int = 0  # 0: 256 on GPU, 32 on CPU
    num_workers: int = -1  # -1: decoding workers chosen for the device
    fit: str = "pad"  # pad (letterbox to square) or crop (CLIP's centre crop)
    download_root: Optional[str] = None
    progress_bar: bool = False  # a terminal progress bar (the CLI turns it on)

    def model_id(self) -> str:
        """The weights' identity, without importing torch or loading them."""
        return clip_model_id(self.model)

    def encoder(self):
        # torch and clip are imported here, by the steps that encode, not when the code location loads.
        # The loaded model is cached per process, so every step of a run shares one copy.
        from .domain.encoder import ClipEncoder

        return ClipEncoder(self.model, self.device, self.batch_size, self.num_workers, self.fit, self.download_root)


class MilvusResource(ConfigurableResource):
    """A Milvus Lite file path (default) or a server URI with MILVUS_TOKEN."""

    uri: str = "data/milvus.db"
    token: Optional[str] = None
    collection: str = DEFAULT_COLLECTION
    timeout_s: int = 30  # per call
    retries: int = 4  # extra tries for transient failures (server restarting), with exponential backoff

    def store(self) -> ProductImageStore:
        return ProductImageStore(self.uri, self.token, self.collection, timeout=self.timeout_s, retries=self.retries)

    @property
    def display_uri(self) -> str:
        return self.uri if is_lite_uri(self.uri) else self.uri.split("@")[-1]


class ImageGeneratorResource(ConfigurableResource):
    """Gemini when an API key (or Vertex AI settings) is present, else the offline campaign board."""

    api_key: Optional[str] = None
    use_vertexai: bool = False
    model: str = DEFAULT_GEMINI_IMAGE_MODEL
    timeout_s: int = 120  # per request
    attempts: int = 4  # per request, including the first; exponential backoff with jitter between
    retry_initial_delay_ms: int = 1000
    max_reference_images: int = 0  # 0: what the model accepts (the model table)
    concurrency: int = 2  # requests in flight
    models_json: Optional[str] = None  # GEMINI_MODELS: overrides of the model table
    image_size: str = "1K"  # for briefs that do not ask for one
    mode: str = "interactive"  # or batch
    max_cost_usd: Optional[str] = None  # per run (a string: environment variables are)

    @property
    def enabled(self) -> bool:
        return bool(self.api_key or self.use_vertexai)

    def model_info(self) -> ImageModel:
        return image_model(self.model, self.models_json)

    def generator(self) -> BoardGenerator | GeminiGenerator:
        if not self.enabled:
            return BoardGenerator()
        return GeminiGenerator(
            api_key=self.api_key,
            model=self.model_info(),
            timeout_s=self.timeout_s,
            attempts=self.attempts,
            initial_delay_s=self.retry_initial_delay_ms / 1000,
            max_reference_images=self.max_reference_images,
        )

    def run_mode(self) -> str:
        """interactive or batch; the offline board is always interactive (nothing to wait for)."""
        if self.mode not in MODES:
            raise GeneratorError(f"GEMINI_MODE={self.mode!r}: use one of {', '.join(MODES)}")
        return self.mode if self.enabled else "interactive"

    def cost_cap(self) -> float | None:
        if not self.max_cost_usd:
            return None
        try:
            cap = float(self.max_cost_usd)
        except ValueError:
            raise GeneratorError(f"GEMINI_MAX_COST_USD={self.max_cost_usd!r} is not a number of dollars") from None
        if cap < 0:
            raise GeneratorError(f"GEMINI_MAX_COST_USD={self.max_cost_usd!r} is negative")
        return cap
