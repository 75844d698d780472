"""Campaign briefs: what to retrieve from a drop and what to generate from it.

`<drop>/briefs.yaml`:

    briefs:
      - id: beach-day
        prompt: A model is wearing these products on the beach
        query: a straw hat          # text used to retrieve reference images
        top_k: 3                    # optional, default 3
        aspect_ratio: "16:9"        # optional
        image_size: 2K              # optional: 512, 1K, 2K, 4K (default GEMINI_IMAGE_SIZE)
        variants: 2                 # optional, 1-4 candidate images, default 1

Sizes and aspect ratios are checked against what the configured image model offers (image_models.py).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from .errors import BriefsError
from .image_models import IMAGE_SIZES, ImageModel

BRIEF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ASPECT_RATIOS = frozenset({"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
                           "1:4", "4:1", "1:8", "8:1"})
MAX_TOP_K = 50
MAX_VARIANTS = 4
_KEYS = {"id", "prompt", "query", "top_k", "aspect_ratio", "image_size", "variants"}


@dataclass(frozen=True)
class Brief:
    id: str
    prompt: str
    query: str
    top_k: int = 3
    aspect_ratio: str | None = None
    image_size: str = "1K"
    variants: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _parse_brief(raw, index: int, where: Path, model: ImageModel | None, default_size: str) -> Brief:
    label = f"{where}: brief #{index + 1}"
    if not isinstance(raw, dict):
        raise BriefsError(f"{label}: expected a mapping with id, prompt, query")
    if isinstance(raw.get("id"), str):
        label = f"{where}: brief {raw['id']!r}"
    unknown = sorted(set(map(str, raw)) - _KEYS)
    if unknown:
        raise BriefsError(f"{label}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KEYS))})")
    for key in ("id", "prompt", "query"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise BriefsError(f"{label}: '{key}' is missing or empty")
    if not BRIEF_ID_RE.fullmatch(raw["id"]):
        raise BriefsError(f"{label}: id must be 1-64 letters, digits, '-' or '_'")
    top_k = raw.get("top_k", 3)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise BriefsError(f"{label}: top_k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
    aspect = raw.get("aspect_ratio")
    if aspect is not None and str(aspect) not in ASPECT_RATIOS:
        raise BriefsError(f"{label}: aspect_ratio {aspect!r} is not one of {', '.join(sorted(ASPECT_RATIOS))}")
    size = str(raw["image_size"]) if raw.get("image_size") is not None else default_size
    where_size = "image_size" if raw.get("image_size") is not None else "image_size (GEMINI_IMAGE_SIZE)"
    if size not in IMAGE_SIZES:
        raise BriefsError(f"{label}: {where_size} {size!r} is not one of {', '.join(IMAGE_SIZES)}")
    variants = raw.get("variants", 1)
    if isinstance(variants, bool) or not isinstance(variants, int) or not 1 <= variants <= MAX_VARIANTS:
        raise BriefsError(f"{label}: variants must be an integer from 1 to {MAX_VARIANTS}, got {variants!r}")
    if model is not None:
        if size not in model.sizes:
            raise BriefsError(f"{label}: {where_size} {size!r} is not offered by {model.id} "
                              f"(GEMINI_IMAGE_MODEL; it offers {', '.join(model.sizes)})")
        if aspect is not None and str(aspect) not in model.aspect_ratios:
            raise BriefsError(f"{label}: aspect_ratio {str(aspect)!r} is not offered by {model.id} "
                              f"(GEMINI_IMAGE_MODEL; it offers {', '.join(model.aspect_ratios)})")
    return Brief(
        id=raw["id"],
        prompt=raw["prompt"].strip(),
        query=raw["query"].strip(),
        top_k=top_k,
        aspect_ratio=str(aspect) if aspect is not None else None,
        image_size=size,
        variants=variants,
    )


def load_briefs(path: str | Path, model: ImageModel | None = None, default_size: str = "1K") -> list[Brief]:
    """Parse and validate a briefs file; a missing file means no briefs. With `model`, each brief's size
    and aspect ratio must be ones that model offers."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BriefsError(f"{path}: not valid YAML ({first})") from None
    if doc is None:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("briefs"), list):
        raise BriefsError(f"{path}: expected a top-level 'briefs:' list")
    briefs = [_parse_brief(raw, i, path, model, default_size) for i, raw in enumerate(doc["briefs"])]
    seen: set[str] = set()
    for b in briefs:
        if b.id in seen:
            raise BriefsError(f"{path}: brief {b.id!r} appears twice")
        seen.add(b.id)
    return briefs
