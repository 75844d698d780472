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

from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from . import storage
from .errors import BriefsError
from .image_models import IMAGE_SIZES, ImageModel
from .settings import DEFAULTS
from .storage import AnyPath

BRIEF_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "1:4", "4:1", "1:8", "8:1")
MAX_TOP_K = 50
MAX_VARIANTS = 4
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Brief(BaseModel):
    """One brief. Strict: a key the schema does not name, or a value of the wrong type, is an error rather
    than a silent coercion (`top_k: "3"`, `variants: true`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Annotated[str, StringConstraints(pattern=BRIEF_ID)]
    prompt: Text
    query: Text  # text used to retrieve reference images
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 3
    aspect_ratio: Optional[Literal[ASPECT_RATIOS]] = None
    image_size: Literal[IMAGE_SIZES] = DEFAULTS["GEMINI_IMAGE_SIZE"]
    variants: Annotated[int, Field(ge=1, le=MAX_VARIANTS)] = 1

    @field_validator("image_size", mode="before")
    @classmethod
    def _size_as_text(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # `image_size: 512` in YAML

    def to_dict(self) -> dict:
        return self.model_dump()


def _problem(error: dict, raw: dict, where_size: str) -> str:
    """pydantic's first complaint, said the way the rest of Drop Studio says it."""
    key = str(error["loc"][0]) if error["loc"] else ""
    value = raw.get(key)
    if key in ("id", "prompt", "query") and (not isinstance(value, str) or not value.strip()):
        return f"'{key}' is missing or empty"
    if key == "id":
        return "id must be 1-64 letters, digits, '-' or '_'"
    if key == "top_k":
        return f"top_k must be an integer from 1 to {MAX_TOP_K}, got {value!r}"
    if key == "variants":
        return f"variants must be an integer from 1 to {MAX_VARIANTS}, got {value!r}"
    if key == "aspect_ratio":
        return f"aspect_ratio {value!r} is not one of {', '.join(sorted(ASPECT_RATIOS))}"
    if key == "image_size":
        return f"{where_size} {str(value)!r} is not one of {', '.join(IMAGE_SIZES)}"
    return f"{key}: {error['msg']}"


def _parse_brief(raw, index: int, where: Path, model: ImageModel | None, default_size: str) -> Brief:
    label = f"{where}: brief #{index + 1}"
    if not isinstance(raw, dict):
        raise BriefsError(f"{label}: expected a mapping with id, prompt, query")
    if isinstance(raw.get("id"), str):
        label = f"{where}: brief {raw['id']!r}"
    unknown = sorted(set(map(str, raw)) - set(Brief.model_fields))
    if unknown:
        raise BriefsError(f"{label}: unknown key(s) {', '.join(unknown)} "
                          f"(allowed: {', '.join(sorted(Brief.model_fields))})")
    given_size = raw.get("image_size") is not None
    where_size = "image_size" if given_size else "image_size (GEMINI_IMAGE_SIZE)"
    values = {k: v for k, v in raw.items() if v is not None}
    values.setdefault("image_size", default_size)
    try:
        brief = Brief(**values)
    except ValidationError as e:
        raise BriefsError(f"{label}: {_problem(e.errors()[0], values, where_size)}") from None
    if model is not None:
        if brief.image_size not in model.sizes:
            raise BriefsError(f"{label}: {where_size} {brief.image_size!r} is not offered by {model.id} "
                              f"(GEMINI_IMAGE_MODEL; it offers {', '.join(model.sizes)})")
        if brief.aspect_ratio is not None and brief.aspect_ratio not in model.aspect_ratios:
            raise BriefsError(f"{label}: aspect_ratio {brief.aspect_ratio!r} is not offered by {model.id} "
                              f"(GEMINI_IMAGE_MODEL; it offers {', '.join(model.aspect_ratios)})")
    return brief


def load_briefs(path: str | Path | AnyPath, model: ImageModel | None = None,
                default_size: str = DEFAULTS["GEMINI_IMAGE_SIZE"]) -> list[Brief]:
    """Parse and validate a briefs file; a missing file means no briefs. With `model`, each brief's size
    and aspect ratio must be ones that model offers."""
    path = storage.as_path(path)
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        return []
    try:
        doc = yaml.safe_load(text)
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
