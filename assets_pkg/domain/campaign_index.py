"""The campaign index stage: a drop's generated campaign images in their own Milvus collection, so a text
search ("last summer's beach campaign") finds them as it finds product images.

Same schema and row key as the product collection (`<drop>/<sha256>`), in `<MILVUS_COLLECTION>_campaigns`;
`path` is relative to the drop's artifacts (`campaign/<brief>.png`). Only new or renamed images are encoded;
a drop whose images are all indexed already costs one query and loads no model.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from . import storage
from .artifacts import DropArtifacts
from .errors import StudioError
from .store import ProductImageStore, row_id

if TYPE_CHECKING:
    from .encoder import ClipEncoder


def campaign_collection(collection: str) -> str:
    return f"{collection}_campaigns"


@dataclass(frozen=True)
class CampaignIndexReport:
    images: int
    encoded: int
    upserted: int
    deleted: int
    indexed: int


def campaign_rows(art: DropArtifacts) -> list[dict]:
    """One row per generated PNG (vector still to come), keyed by content."""
    rows = []
    for png in art.campaign_pngs():
        data = storage.read_bytes(png)
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        rows.append({"sha256": hashlib.sha256(data).hexdigest(), "path": f"campaign/{png.name}", "aliases": [],
                     "width": width, "height": height, "source": png})
    # The same bytes under two names (a variant identical to another) is one row with an alias.
    by_sha: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        if r["sha256"] in by_sha:
            by_sha[r["sha256"]]["aliases"].append(r["path"])
        else:
            by_sha[r["sha256"]] = r
    return list(by_sha.values())


def index_campaign_images(drop: str, art: DropArtifacts, load_encoder: Callable[[], "ClipEncoder"],
                          open_store: Callable[[], ProductImageStore]) -> CampaignIndexReport:
    rows = campaign_rows(art)
    with open_store() as store:
        if not rows and not store.exists():
            return CampaignIndexReport(0, 0, 0, 0, 0)
        current = store.rows_of_drop(drop)
        todo = [r for r in rows if current.get(row_id(drop, r["sha256"])) != (r["path"], tuple(r["aliases"]))]
        encoder = load_encoder() if todo else None
        batch = encoder.embed_images([r["source"] for r in todo]) if todo else None
        if batch is not None and batch.failures:
            bad = ", ".join(todo[i]["path"] for i, _ in batch.failures)
            raise StudioError(f"{drop}: campaign images that do not decode: {bad}")
        dim = encoder.dim if encoder else store.dim()
        vectors = {todo[i]["sha256"]: v for i, v in zip(batch.indices, batch.vectors)} if batch else {}
        for r in rows:
            r["vector"] = vectors.get(r["sha256"], np.zeros(dim or 1, np.float32))  # unchanged rows are not sent
        done = store.sync_drop(drop, rows, dim)
    return CampaignIndexReport(len(rows), len(todo), done.upserted, done.deleted, len(done.ids))
