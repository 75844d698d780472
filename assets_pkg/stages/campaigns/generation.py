"""What a campaign image generator is given and what it returns: the brief's reference images, an image
to change with its instruction, and a `Generation` (PNG bytes or the reason there is none, the text the
model said, token usage, and who made it)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Reference:
    path: Path
    score: float | None  # None for a product the brief names (not searched)
    sku: str = ""

    @property
    def label(self) -> str:
        return f"{self.path.name}  ({self.sku or f'{self.score:.2f}'})"


@dataclass(frozen=True)
class Edit:
    """An image for the model to change (a brief's base image, or an image to revise), sent before the
    references, and the instruction that says what to change."""

    image: Path
    instruction: str


# An image to change goes as it is (a PNG the model made, a JPEG shot) up to this size, else as a JPEG.
EDIT_MAX_BYTES = 7_000_000
EDIT_MAX_SIDE = 2048


@dataclass
class Generation:
    brief_id: str
    generator: str  # "gemini" or "offline-board"
    model: str | None
    png: bytes | None
    text: str = ""
    finish_reason: str | None = None
    usage: dict = field(default_factory=dict)

    @property
    def blocked_reason(self) -> str | None:
        if self.png is not None:
            return None
        return self.finish_reason or "NO_IMAGE"


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()
