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
from .domain.model_id import clip_model_id
from .domain.generator import DEFAULT_GEMINI_IMAGE_MODEL, DEFAULT_PRICES, BoardGenerator, GeminiGenerator
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
    max_reference_images: int = 0  # 0: what the model accepts (3 flash, 14 pro)
    concurrency: int = 2  # requests in flight
    prices_json: Optional[str] = None  # '{"model": [usd per M input tokens, usd per M output tokens]}'

    def generator(self) -> BoardGenerator | GeminiGenerator:
        if not self.api_key and not self.use_vertexai:
            return BoardGenerator()
        return GeminiGenerator(
            api_key=self.api_key,
            model=self.model,
            timeout_s=self.timeout_s,
            attempts=self.attempts,
            initial_delay_s=self.retry_initial_delay_ms / 1000,
            max_reference_images=self.max_reference_images,
        )

    def prices(self) -> dict:
        import json

        from .domain.errors import GeneratorError

        table = dict(DEFAULT_PRICES)
        if self.prices_json:
            try:
                table.update({k: tuple(v) for k, v in json.loads(self.prices_json).items()})
            except (ValueError, TypeError, AttributeError):
                raise GeneratorError('GEMINI_PRICES must be JSON like {"model": [input, output]}') from None
        return table
