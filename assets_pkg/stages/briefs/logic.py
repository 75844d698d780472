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
        products: [SKU-4471]        # optional: these products' images are the first references (then
                                    #   `query` is optional); SKUs from the drop's products.csv
        where: {category: hats}     # optional: the search's filters (sku, category, color)
        base_image: models/anna.jpg # optional: a photo to change rather than a scene to invent: sent
                                    #   first, the prompt asks the model to put the products into it.
                                    #   A file in the drop, else under BASE_IMAGES_DIR

Sizes and aspect ratios are checked against what the configured image model offers (domain/image_models.py).

Files: briefs.json (the validated briefs, as the stages after this one read them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from ...domain import storage
from ...domain.artifacts import DropArtifacts, digest
from ...domain.channels import CHANNEL_NAME, FOCUS
from ...domain.errors import BriefsError
from ...domain.image_models import ASPECT_RATIOS, IMAGE_SIZES, ImageModel
from ...domain.products import FILTER_FIELDS, SKU_RE, InvalidFilter, filter_value
from ...domain.settings import DEFAULTS
from ...domain.storage import AnyPath
from ...domain.store import MAX_TOP_K
from ..catalog.logic import Catalog

FILES = ("briefs.json",)

BRIEF_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_VARIANTS = 4
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Brief(BaseModel):
    """One brief. Strict: a key the schema does not name, or a value of the wrong type, is an error rather
    than a silent coercion (`top_k: "3"`, `variants: true`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Annotated[str, StringConstraints(pattern=BRIEF_ID)]
    prompt: Text
    query: Optional[Text] = None  # text used to retrieve reference images; optional when products are named
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 3
    aspect_ratio: Optional[Literal[ASPECT_RATIOS]] = None
    image_size: Literal[IMAGE_SIZES] = DEFAULTS["GEMINI_IMAGE_SIZE"]
    variants: Annotated[int, Field(ge=1, le=MAX_VARIANTS)] = 1
    products: list[Annotated[str, StringConstraints(pattern=SKU_RE.pattern)]] = []  # SKUs, references first
    where: dict[Literal[FILTER_FIELDS], str] = {}  # the search's filters
    base_image: Optional[str] = None  # a photo to change (in the drop, else under BASE_IMAGES_DIR)
    channels: list[Annotated[str, StringConstraints(pattern=CHANNEL_NAME)]] = []  # placements to publish for
    focus: Literal[FOCUS] = "center"  # the side a rendition's crop keeps

    @field_validator("base_image")
    @classmethod
    def _relative(cls, v):
        if v is not None and (not v.strip() or v.startswith(("/", "~")) or "\\" in v or ":" in v
                              or ".." in v.split("/") or len(v) > 255):
            raise ValueError("base_image")
        return v

    @field_validator("where")
    @classmethod
    def _filters(cls, v):
        try:
            return {k: filter_value(k, value) for k, value in v.items()}
        except InvalidFilter as e:
            raise ValueError(str(e)) from None

    @field_validator("products")
    @classmethod
    def _each_once(cls, v):
        twice = sorted({s for s in v if v.count(s) > 1})
        if twice:
            raise ValueError(f"products names {', '.join(twice)} twice")
        return v

    @model_validator(mode="after")
    def _query_or_products(self):
        if self.query is None and not self.products:
            raise ValueError("query_or_products")
        return self

    @field_validator("image_size", mode="before")
    @classmethod
    def _size_as_text(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # `image_size: 512` in YAML

    def to_dict(self) -> dict:
        # A brief without a base image or channels is stored as before they existed: its key is unchanged.
        unset = {"base_image": None, "channels": [], "focus": "center"}
        return self.model_dump(exclude={k for k, v in unset.items() if getattr(self, k) == v} or None)

    def at(self, aspect_ratio: str, image_size: str) -> "Brief":
        """This brief asked at another aspect ratio and size (the image a channel's rendition is cut from)."""
        return self.model_copy(update={"aspect_ratio": aspect_ratio, "image_size": image_size})


def _problem(error: dict, raw: dict, where_size: str) -> str:
    """pydantic's first complaint, said the way the rest of Drop Studio says it."""
    key = str(error["loc"][0]) if error["loc"] else ""
    value = raw.get(key)
    if not key and "query_or_products" in error["msg"]:
        return "'query' is missing or empty (a brief needs a query, products, or both)"
    if key in ("id", "prompt", "query") and (not isinstance(value, str) or not value.strip()):
        return f"'{key}' is missing or empty"
    if key == "products":
        return (f"products must be a list of SKUs (1-64 letters, digits, '.', '_', '/' or '-'), got {value!r}"
                if "twice" not in error["msg"] else error["msg"].removeprefix("Value error, "))
    if key == "where":
        return (f"where: {error['msg'].removeprefix('Value error, ')}" if error["type"] == "value_error" else
                f"where must map {', '.join(FILTER_FIELDS)} to a value, got {value!r}")
    if key == "base_image":
        return (f"base_image must be a path inside the drop (or BASE_IMAGES_DIR), like models/front.jpg; "
                f"got {value!r}")
    if key == "id":
        return "id must be 1-64 letters, digits, '-' or '_'"
    if key == "top_k":
        return f"top_k must be an integer from 1 to {MAX_TOP_K}, got {value!r}"
    if key == "variants":
        return f"variants must be an integer from 1 to {MAX_VARIANTS}, got {value!r}"
    if key == "channels":
        return f"channels must be a list of channel names, like [meta-feed, meta-story], got {value!r}"
    if key == "focus":
        return f"focus must be one of {', '.join(FOCUS)}, got {value!r}"
    if key == "aspect_ratio":
        return f"aspect_ratio {value!r} is not one of {', '.join(sorted(ASPECT_RATIOS))}"
    if key == "image_size":
        return f"{where_size} {str(value)!r} is not one of {', '.join(IMAGE_SIZES)}"
    return f"{key}: {error['msg']}"


def _parse_brief(raw, index: int, where: Path, model: ImageModel | None, default_size: str) -> Brief:
    label = f"{where}: brief #{index + 1}"
    if not isinstance(raw, dict):
        raise BriefsError(f"{label}: expected a mapping with id, prompt, query (or products)")
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


def check_channels(briefs: list[Brief], channels: dict, where: str | Path | AnyPath) -> None:
    """Every channel a brief names is in the table (domain/channels.py, with channels.yaml): checked before
    anything is searched or billed."""
    for b in briefs:
        for name in b.channels:
            if name not in channels:
                raise BriefsError(f"{where}: brief {b.id!r}: unknown channel {name!r} (known: "
                                  f"{', '.join(sorted(channels))}; add your own in channels.yaml)")
        twice = sorted({c for c in b.channels if b.channels.count(c) > 1})
        if twice:
            raise BriefsError(f"{where}: brief {b.id!r}: channels names {', '.join(twice)} twice")


def check_products(briefs: list[Brief], catalog: Catalog, where: str | Path | AnyPath) -> None:
    """Every SKU a brief names is a product of the drop's catalog: checked before anything is searched or billed."""
    known = catalog.skus
    for b in briefs:
        for sku in b.products:
            if sku not in known:
                hint = (f"products.csv lists {len(known)} SKUs" if catalog.present else
                        "the drop has no products.csv")
                raise BriefsError(f"{where}: brief {b.id!r}: unknown SKU {sku!r} ({hint})")


def base_image_path(brief: Brief, drop_folder: AnyPath, shared: str | None) -> AnyPath | None:
    """Where the brief's base image is: in the drop, else under BASE_IMAGES_DIR (`shared`); None when
    neither has it."""
    candidates = [drop_folder / brief.base_image]
    if shared:
        candidates.append(storage.location("BASE_IMAGES_DIR", shared) / brief.base_image)
    return next((c for c in candidates if storage.exists(c)), None)


def check_base_images(briefs: list[Brief], drop_folder: AnyPath, shared: str | None, max_pixels: int,
                      where: str | Path | AnyPath) -> None:
    """Every base image a brief names exists and decodes: checked before anything is searched or billed."""
    from ...domain.drops import decode_problem

    for b in briefs:
        if b.base_image is None:
            continue
        path = base_image_path(b, drop_folder, shared)
        if path is None:
            looked = "the drop" + (f" or BASE_IMAGES_DIR={shared}" if shared else " (BASE_IMAGES_DIR is not set)")
            raise BriefsError(f"{where}: brief {b.id!r}: base_image {b.base_image!r} not found in {looked}")
        problem = decode_problem(storage.read_bytes(path), max_pixels)
        if isinstance(problem, str):
            raise BriefsError(f"{where}: brief {b.id!r}: base_image {b.base_image!r} cannot be used ({problem})")


def write_briefs(art: DropArtifacts, briefs: list[Brief]) -> str:
    """Keep the validated briefs for the stages after this one; returns their key (what those stages read)."""
    doc = [b.to_dict() for b in briefs]
    art.update_json("briefs.json", doc)
    return digest(doc)


def read_briefs(art: DropArtifacts) -> list[Brief]:
    return [Brief(**b) for b in art.read_json("briefs.json", [])]
