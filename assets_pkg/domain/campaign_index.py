"""The campaign index stage: a drop's generated campaign images in their own Milvus collection, so a text
search ("last summer's beach campaign") finds them as it finds product images.

Same schema and row key as the product collection (`<drop>/<sha256>`), in `<MILVUS_COLLECTION>_campaigns`;
`path` is relative to the drop's artifacts (`campaign/<brief>.png`). With Milvus Lite it lives in a file of
its own beside the product file (`milvus-campaigns.db`): a Lite file is served by one process at a time,
and the product collection's "unchanged, do not even open it" rule keys on its own file's fingerprint.

Like the product collection, an unchanged drop costs no model, no Milvus and no download: the PNGs are
known by size and version from one listing, and a verified sync is recorded in `campaign-index.json`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from . import storage
from .artifacts import DropArtifacts, read_json, write_json
from .collection import rows_digest
from .errors import StudioError
from .milvus import is_lite_uri, lite_fingerprint
from .store import SCHEMA_VERSION, ProductImageStore, row_facts, row_id

if TYPE_CHECKING:
    from .encoder import ClipEncoder


def campaign_collection(collection: str) -> str:
    return f"{collection}_campaigns"


def campaign_uri(uri: str) -> str:
    """The same Milvus server; for Milvus Lite, a file of its own beside the product file."""
    if not is_lite_uri(uri):
        return uri
    path = Path(uri)
    return str(path.with_name(f"{path.stem}-campaigns{path.suffix}"))


@dataclass(frozen=True)
class CampaignIndexReport:
    images: int
    encoded: int
    upserted: int
    deleted: int
    indexed: int
    synced: bool  # False: nothing changed since a verified sync, Milvus not opened


def _record_path(art: DropArtifacts):
    return art.root / "campaign-index.json"


def campaign_rows(art: DropArtifacts, known: dict[str, dict]) -> tuple[list[dict], dict[str, dict]]:
    """(one row per distinct PNG, the facts of every PNG by path). A PNG whose size and version are those
    in `known` is not read again."""
    files: dict[str, dict] = {}
    for e in art.campaign_png_entries():
        path = f"campaign/{e.rel}"
        old = known.get(path)
        if old and (old["size"], old["version"]) == (e.size, e.version):
            files[path] = old
            continue
        data = storage.read_bytes(e.path)
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        files[path] = {"size": e.size, "version": e.version, "sha256": hashlib.sha256(data).hexdigest(),
                       "width": width, "height": height}
    rows: dict[str, dict] = {}
    for path in sorted(files):  # the same bytes under two names is one row with an alias
        f = files[path]
        if f["sha256"] in rows:
            rows[f["sha256"]]["aliases"].append(path)
        else:
            rows[f["sha256"]] = {"sha256": f["sha256"], "path": path, "aliases": [], "width": f["width"],
                                 "height": f["height"]}
    return list(rows.values()), files


def index_campaign_images(drop: str, art: DropArtifacts, model_id: str, load_encoder: Callable[[], "ClipEncoder"],
                          open_store: Callable[[], ProductImageStore], uri: str, collection: str) \
        -> CampaignIndexReport:
    record = read_json(_record_path(art), {})
    rows, files = campaign_rows(art, record.get("files", {}))
    digest_now = rows_digest(drop, rows, model_id, collection, uri.split("@")[-1])
    fingerprint = lite_fingerprint(uri)
    never_indexed = not rows and not record.get("indexed")
    verified = fingerprint and record.get("rows_digest") == digest_now and \
        record.get("verified_fingerprint") == fingerprint and record.get("schema") == SCHEMA_VERSION
    if never_indexed or verified:
        return CampaignIndexReport(len(rows), 0, 0, 0, record.get("indexed", 0), synced=False)
    rewrite_all = record.get("model_id") not in (None, model_id)
    with open_store() as store:
        current = store.rows_of_drop(drop) if rows or store.exists() else {}
        todo = [r for r in rows if rewrite_all or current.get(row_id(drop, r["sha256"])) != row_facts(r)]
        encoder = load_encoder() if todo else None
        batch = encoder.embed_images([art.root / r["path"] for r in todo]) if todo else None
        if batch is not None and batch.failures:
            bad = ", ".join(todo[i]["path"] for i, _ in batch.failures)
            raise StudioError(f"{drop}: campaign images that do not decode: {bad}")
        dim = encoder.dim if encoder else store.dim()
        vectors = {todo[i]["sha256"]: v for i, v in zip(batch.indices, batch.vectors)} if batch else {}
        for r in rows:  # rows left out of `todo` are not sent: sync_drop skips them by the same rule
            r["vector"] = vectors.get(r["sha256"], np.zeros(dim or 1, np.float32))
        done = store.sync_drop(drop, rows, dim, rewrite_all=rewrite_all) if dim else None
    indexed = len(done.ids) if done else 0
    write_json(_record_path(art), {
        "collection": collection, "model_id": model_id, "rows_digest": digest_now, "indexed": indexed,
        "schema": SCHEMA_VERSION,
        "files": files, "verified_fingerprint": store.fingerprint_at_close if done and
        done.ids == {row_id(drop, r["sha256"]) for r in rows} else None,
    })
    return CampaignIndexReport(len(rows), len(todo), done.upserted if done else 0, done.deleted if done else 0,
                               indexed, synced=True)
