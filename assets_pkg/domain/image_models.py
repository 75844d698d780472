"""What Drop Studio knows about each Gemini image model: one table, checked before any request.

Per model id: its status and announced shutdown date (and what replaces it), how many reference images
it accepts, the output sizes and aspect ratios it offers, and its price per image by size. The batch
API bills the same images at a discount. Facts come from Google's Gemini API model, deprecation and
pricing pages as of 2026-11; prices change, so `GEMINI_MODELS` (JSON) overrides or extends any entry:

    GEMINI_MODELS='{"gemini-3.1-flash-image": {"price_per_image": {"1K": 0.07}},
                    "my-tuned-image-model": {"max_references": 3, "sizes": ["1K"], "price_per_image": {"1K": 0.05}}}'
"""

from __future__ import annotations

import json
from datetime import date
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import GeneratorError

DEFAULT_GEMINI_IMAGE_MODEL = "gemini-3.1-flash-image"  # Nano Banana 2, GA since 2026-05-28
# Every output size a model of the table may offer, and its long side in pixels (the offline board draws the same).
SIZE_PIXELS = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}
IMAGE_SIZES = tuple(SIZE_PIXELS)
# Aspect ratios every Gemini image model takes; some take more.
STANDARD_ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
# Every aspect ratio a model of the table takes (a brief may ask for any; its model is checked after).
ASPECT_RATIOS = STANDARD_ASPECT_RATIOS + ("1:4", "4:1", "1:8", "8:1")
MODES = ("interactive", "batch")
# The pixels a model answers with at 1K for each aspect ratio (Google's image generation docs); the other sizes
# scale it (512: half, 2K: twice, 4K: four times). A ratio not listed keeps 1K's area, in multiples of 32.
OUTPUT_1K = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
             "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}


def output_size(aspect: str | None, size: str) -> tuple[int, int]:
    """(width, height) of an image the model makes at `aspect` and `size` (about size x size pixels of area)."""
    scale = SIZE_PIXELS[size] / 1024
    if aspect in OUTPUT_1K or aspect is None:
        w, h = OUTPUT_1K[aspect or "1:1"]
    else:
        rw, rh = (int(v) for v in aspect.split(":"))
        w, h = (max(32, round((1024 * 1024 * a) ** 0.5 / 32) * 32) for a in (rw / rh, rh / rw))
    return round(w * scale), round(h * scale)


class ImageModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    status: Literal["ga", "preview", "deprecated", "shut_down"] = "ga"
    shutdown: Optional[date] = None  # the earliest shutdown Google announced
    replacement: Optional[str] = None
    max_references: int = 3
    sizes: tuple[str, ...] = ("1K",)
    aspect_ratios: tuple[str, ...] = STANDARD_ASPECT_RATIOS
    price_per_image: dict[str, float] = {}  # USD per image by size, interactive
    batch_discount: float = 0.5  # the Batch API bills this fraction less

    def price(self, size: str, mode: str) -> float | None:
        """Estimated USD for one image of `size`; None when the table has no price for it."""
        usd = self.price_per_image.get(size)
        if usd is None:
            return None
        return round(usd * (1 - self.batch_discount) if mode == "batch" else usd, 6)

    def unavailable(self, today: date) -> str | None:
        """Why this model cannot be used today, or None."""
        if self.status == "shut_down" or (self.shutdown is not None and self.shutdown <= today):
            when = f" on {self.shutdown.isoformat()}" if self.shutdown else ""
            instead = f"; use {self.replacement}" if self.replacement else ""
            return f"{self.id} was shut down{when}{instead}"
        return None


BUILT_IN: dict[str, dict] = {
    "gemini-3.1-flash-image": {  # Nano Banana 2: up to 10 object + 4 people references
        "status": "ga", "max_references": 14, "sizes": IMAGE_SIZES, "aspect_ratios": ASPECT_RATIOS,
        "price_per_image": {"512": 0.045, "1K": 0.067, "2K": 0.101, "4K": 0.151},
    },
    "gemini-3-pro-image": {  # Nano Banana Pro: up to 6 object + 5 people references (14 in all)
        "status": "ga", "max_references": 14, "sizes": ("1K", "2K", "4K"),
        "price_per_image": {"1K": 0.134, "2K": 0.134, "4K": 0.24},
    },
    # GA 2026-06-30. Its reference cap and price were not on the pages this table came from: 3 references
    # (the flash models' old cap) and no price, so a budget needs GEMINI_MODELS to name one.
    "gemini-3.1-flash-lite-image": {"status": "ga", "max_references": 3, "sizes": ("1K",)},
    "gemini-2.5-flash-image": {
        "status": "deprecated", "shutdown": "2026-10-02", "replacement": "gemini-3.1-flash-image",
        "max_references": 3, "sizes": ("1K",), "price_per_image": {"1K": 0.039},
    },
    "gemini-3-pro-image-preview": {"status": "shut_down", "shutdown": "2026-06-25", "replacement": "gemini-3-pro-image",
                                   "max_references": 14, "sizes": ("1K", "2K", "4K")},
    "gemini-3.1-flash-image-preview": {"status": "shut_down", "shutdown": "2026-06-25",
                                       "replacement": "gemini-3.1-flash-image", "max_references": 14,
                                       "sizes": IMAGE_SIZES},
    "gemini-2.5-flash-image-preview": {"status": "shut_down", "replacement": "gemini-3.1-flash-image"},
}


def model_table(overrides_json: str | None = None) -> dict[str, ImageModel]:
    """The built-in table with GEMINI_MODELS merged over it, field by field."""
    entries = {k: dict(v) for k, v in BUILT_IN.items()}
    if overrides_json:
        try:
            overrides = json.loads(overrides_json)
            if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
                raise ValueError("expected an object of objects")
        except ValueError as e:
            raise GeneratorError(f'GEMINI_MODELS is not JSON like {{"model-id": {{"price_per_image": {{"1K": 0.07}}}}}}: {e}') \
                from None
        for model_id, fields in overrides.items():
            entries.setdefault(model_id, {}).update(fields)
    table = {}
    for model_id, fields in entries.items():
        try:
            table[model_id] = ImageModel(id=model_id, **fields)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise GeneratorError(f"GEMINI_MODELS: {model_id}.{where}: {first['msg']}") from None
    return table


def image_model(model_id: str, overrides_json: str | None = None) -> ImageModel:
    """The table's entry for a model; a model the table does not know gets conservative defaults
    (3 references, 1K, the standard aspect ratios, no price)."""
    return model_table(overrides_json).get(model_id) or ImageModel(id=model_id)
