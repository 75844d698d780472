"""Campaign image generators: Gemini ("Nano Banana") or an offline campaign board.

Both take a brief and its retrieved reference images and return a
`Generation`: PNG bytes (or the reason there is none), the text the model
said, token usage, and who made it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from .briefs import Brief
from .drops import load_rgb
from .errors import GeneratorError
from .sheets import font, wrap

# Nano Banana's GA name; `gemini-2.5-flash-image-preview` (the article's) is shut down.
DEFAULT_GEMINI_IMAGE_MODEL = "gemini-2.5-flash-image"

# USD per million tokens (input, output) from Google's published Gemini API prices; override
# or extend with GEMINI_PRICES='{"model": [input, output]}'. Unknown models get no estimate.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gemini-2.5-flash-image": (0.30, 30.0),
    "gemini-3-pro-image-preview": (2.0, 120.0),
}


def default_max_references(model: str) -> int:
    """Reference images the model accepts: 14 for the pro image models, 3 for the flash ones."""
    return 14 if "pro" in model else 3


def estimate_cost(model: str | None, usage: dict, prices: dict) -> float | None:
    if not model or model not in prices:
        return None
    inp, out = prices[model]
    return round(usage.get("prompt_token_count", 0) * inp / 1e6 + usage.get("candidates_token_count", 0) * out / 1e6, 6)
RETRY_STATUS_CODES = (408, 429, 500, 502, 503, 504)
NO_IMAGE_REASONS = ("SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "NO_IMAGE",
                    "IMAGE_OTHER", "RECITATION", "IMAGE_RECITATION", "BLOCKLIST", "SPII", "OTHER")


@dataclass(frozen=True)
class Reference:
    path: Path
    score: float


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


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _aspect_size(aspect: str | None, long_side: int = 1024) -> tuple[int, int]:
    if not aspect:
        return long_side, long_side
    w, h = (int(v) for v in aspect.split(":"))
    return (long_side, round(long_side * h / w)) if w >= h else (round(long_side * w / h), long_side)


class BoardGenerator:
    """Offline stand-in for an image model: lays the references and the prompt
    out as a campaign board, so the whole graph runs without an API key."""

    name = "offline-board"
    model = None

    def generate(self, brief: Brief, references: Sequence[Reference]) -> Generation:
        W, H = _aspect_size(brief.aspect_ratio)
        board = Image.new("RGB", (W, H), (248, 246, 240))
        d = ImageDraw.Draw(board)
        margin = W // 24
        d.text((margin, margin), f"Campaign board: {brief.id}", fill=(25, 25, 25), font=font(max(18, W // 32)))
        prompt_font = font(max(14, W // 52))
        d.multiline_text((margin, margin + W // 16), wrap(brief.prompt, 60), fill=(55, 55, 55), font=prompt_font,
                         spacing=4)
        top = margin + W // 16 + 5 * max(14, W // 52) + 20
        n = max(1, len(references))
        cell_w = (W - margin * (n + 1)) // n
        cell_h = H - top - margin - 30
        side = max(16, min(cell_w, cell_h))
        for k, ref in enumerate(references):
            try:
                img = load_rgb(ref.path)
            except Exception:
                continue
            scale = side / max(img.width, img.height)  # fill the cell, small pictures too
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
            x = margin + k * (cell_w + margin) + (cell_w - img.width) // 2
            board.paste(img, (x, top))
            d.text((x, top + img.height + 6), f"{ref.path.name}  ({ref.score:.2f})", fill=(90, 90, 90),
                   font=font(max(12, W // 70)))
        if not references:
            d.text((margin, top), "no reference images found", fill=(160, 40, 40), font=prompt_font)
        return Generation(brief.id, self.name, None, _png(board), text="", finish_reason="STOP")


def prepare_reference(path: Path, max_side: int = 1024) -> Image.Image:
    """EXIF-oriented RGB, at most `max_side` pixels on the long side, to keep requests small."""
    img = load_rgb(path)
    img.thumbnail((max_side, max_side))
    return img


class GeminiGenerator:
    """Calls a Gemini image model through the `google-genai` SDK.

    The SDK's own retry (HttpRetryOptions: exponential backoff with jitter) handles
    408/429/5xx; the base URL is left to the SDK so `GOOGLE_GEMINI_BASE_URL` works.
    """

    name = "gemini"

    def __init__(
        self,
        api_key: str | None,
        model: str = DEFAULT_GEMINI_IMAGE_MODEL,
        timeout_s: float = 120,
        attempts: int = 4,
        initial_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        max_reference_images: int = 0,
        reference_max_side: int = 1024,
        api_version: str = "v1beta",
    ):
        from google import genai
        from google.genai import types

        self.model = model
        self.max_reference_images = max_reference_images or default_max_references(model)
        self.reference_max_side = reference_max_side
        self._types = types
        http = types.HttpOptions(
            api_version=api_version,
            timeout=int(timeout_s * 1000),
            retry_options=types.HttpRetryOptions(
                attempts=attempts,
                initial_delay=initial_delay_s,
                max_delay=max_delay_s,
                exp_base=2,
                jitter=1,
                http_status_codes=list(RETRY_STATUS_CODES),
            ),
        )
        # api_key=None lets the SDK use Vertex AI settings from its own environment variables.
        self._client = genai.Client(api_key=api_key, http_options=http) if api_key else genai.Client(http_options=http)

    def generate(self, brief: Brief, references: Sequence[Reference]) -> Generation:
        from google.genai import errors

        types = self._types
        images = [prepare_reference(r.path, self.reference_max_side) for r in references[: self.max_reference_images]]
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=brief.aspect_ratio) if brief.aspect_ratio else None,
        )
        try:
            resp = self._client.models.generate_content(model=self.model, contents=[brief.prompt, *images], config=config)
        except errors.ClientError as e:
            # Wrong model or credentials fail every brief alike: stop the run with one clear line.
            if e.code == 404:
                raise GeneratorError(f"GEMINI_IMAGE_MODEL={self.model!r}: model not found ({e.status})") from None
            if e.code in (401, 403):
                raise GeneratorError(
                    f"GEMINI_IMAGE_MODEL={self.model!r}: access denied ({e.code} {e.status}); check GEMINI_API_KEY "
                    f"and that the Gemini API is enabled"
                ) from None
            return self._failed(brief, f"HTTP_{e.code}", e.status or "")  # e.g. 429 after every retry
        except errors.ServerError as e:
            return self._failed(brief, f"HTTP_{e.code}", f"{e.status} after retries")
        except Exception as e:  # the SDK re-raises transport errors after its retries
            name = type(e).__name__
            if "Timeout" in name:
                return self._failed(brief, "TIMEOUT", f"no reply within the request timeout ({name})")
            if "Connect" in name or isinstance(e, OSError):
                return self._failed(brief, "CONNECTION_ERROR", name)
            raise
        return self._parse(brief, resp)

    def _failed(self, brief: Brief, reason: str, text: str) -> Generation:
        return Generation(brief.id, self.name, self.model, None, text=text, finish_reason=reason)

    def _parse(self, brief: Brief, resp) -> Generation:
        png, texts, finish = None, [], None
        for cand in resp.candidates or []:
            finish = cand.finish_reason.name if cand.finish_reason is not None else finish
            for part in (cand.content.parts if cand.content and cand.content.parts else []):
                if part.inline_data is not None and part.inline_data.data and png is None:
                    with Image.open(io.BytesIO(part.inline_data.data)) as im:
                        png = _png(im.convert("RGB"))
                elif part.text:
                    texts.append(part.text)
        if png is None and resp.prompt_feedback is not None and resp.prompt_feedback.block_reason is not None:
            finish = resp.prompt_feedback.block_reason.name
        if png is None and finish in (None, "STOP"):
            finish = "NO_IMAGE"  # a text-only reply
        usage = {}
        if resp.usage_metadata is not None:
            usage = {
                k: v
                for k, v in resp.usage_metadata.model_dump(exclude_none=True).items()
                if isinstance(v, (int, float))
            }
        return Generation(brief.id, self.name, self.model, png, text="\n".join(texts), finish_reason=finish, usage=usage)
