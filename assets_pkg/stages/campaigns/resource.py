"""The campaign stage's resource: which image generator a run uses (Gemini or the offline board), with its
settings, mode and spending cap."""

from __future__ import annotations

from typing import ClassVar, Optional

from ...domain.artifacts import DropArtifacts
from ...domain.errors import GeneratorError
from ...domain.image_models import MODES, ImageModel, image_model
from ...domain.settings import setting
from ...settings_resource import FromSettings
from .board import BoardGenerator
from .generator import GeminiGenerator
from .batch import BatchRecord
from .logic import campaign_batch_path


class ImageGeneratorResource(FromSettings):
    """Gemini when GEMINI_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI) is set, else the offline campaign board."""

    SETTINGS: ClassVar = {
        "model": "GEMINI_IMAGE_MODEL", "timeout_s": "GEMINI_TIMEOUT_S", "attempts": "GEMINI_ATTEMPTS",
        "retry_initial_delay_ms": "GEMINI_RETRY_INITIAL_DELAY_MS",
        "max_reference_images": "GEMINI_MAX_REFERENCE_IMAGES", "concurrency": "GEMINI_CONCURRENCY",
        "models_json": "GEMINI_MODELS", "image_size": "GEMINI_IMAGE_SIZE", "mode": "GEMINI_MODE",
        "max_cost_usd": "GEMINI_MAX_COST_USD",
    }
    model: Optional[str] = None
    timeout_s: Optional[int] = None  # per request
    attempts: Optional[int] = None  # per request, including the first; exponential backoff with jitter
    retry_initial_delay_ms: Optional[int] = None
    max_reference_images: Optional[int] = None  # 0: what the model accepts (the model table)
    concurrency: Optional[int] = None  # requests in flight
    models_json: Optional[str] = None  # overrides of the model table
    image_size: Optional[str] = None  # for briefs that do not ask for one
    mode: Optional[str] = None  # interactive or batch
    max_cost_usd: Optional[str] = None  # per run (a string: environment variables are)

    @property
    def enabled(self) -> bool:
        return bool(setting("GEMINI_API_KEY") or setting("GOOGLE_GENAI_USE_VERTEXAI"))

    def model_info(self) -> ImageModel:
        return image_model(self.get("model"), self.get("models_json"))

    def generator(self) -> BoardGenerator | GeminiGenerator:
        if not self.enabled:
            return BoardGenerator()
        return GeminiGenerator(
            api_key=setting("GEMINI_API_KEY"),
            model=self.model_info(),
            timeout_s=self.get("timeout_s"),
            attempts=self.get("attempts"),
            initial_delay_s=self.get("retry_initial_delay_ms") / 1000,
            max_reference_images=self.get("max_reference_images"),
        )

    @staticmethod
    def waiting_batch_job(art: DropArtifacts) -> str | None:
        """The Batch API job a drop's campaign images wait on (GEMINI_MODE=batch), if any."""
        record = BatchRecord.load(campaign_batch_path(art))
        return record.job if record is not None and record.job else None

    def run_mode(self) -> str:
        """interactive or batch; the offline board is always interactive (nothing to wait for)."""
        mode = self.get("mode")
        if mode not in MODES:
            raise GeneratorError(f"GEMINI_MODE={mode!r}: use one of {', '.join(MODES)}")
        return mode if self.enabled else "interactive"

    def cost_cap(self) -> float | None:
        raw = self.get("max_cost_usd")
        if not raw:
            return None
        try:
            cap = float(raw)
        except ValueError:
            raise GeneratorError(f"GEMINI_MAX_COST_USD={raw!r} is not a number of dollars") from None
        if cap < 0:
            raise GeneratorError(f"GEMINI_MAX_COST_USD={raw!r} is negative")
        return cap
