"""The campaign index stage: a drop's generated campaign images in their own Milvus collection, so a text
search ("last summer's beach campaign") finds them as it finds product images.

Same schema and row key as the product collection (`<drop>/<sha256>`), in `<MILVUS_COLLECTION>_campaigns`;
`path` is relative to the drop's artifacts (`campaign/<brief>.png`). With Milvus Lite it lives in a file of
its own beside the product file (`milvus-campaigns.db`): a Lite file is served by one process at a time,
and the product collection's "unchanged, do not even open it" rule keys on its own file's fingerprint.

Like the product collection, an unchanged drop costs no model, no Milvus and no download: the PNGs are
known by size and version from one listing, and a verified sync is recorded in `campaign-index.json`.

Each row also holds its image's scores (`fidelity`, `prompt_match`, `flagged`; stages/campaigns/scores.py), so
a filter finds the flagged candidates. A row whose scores alone changed is written again with the vector
already stored: scores never cost an encoding.

Each model has its own campaign collection (`<its product collection>_campaigns`) and record, as it has
for products (domain/search_models.py).

Files, in each model's files: campaign-index.json (the key of the rows last synced, the PNGs' size, version and sha256, and the
Lite file's fingerprint after a verified sync).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from PIL import Image

from ...domain import storage
from ...domain.artifacts import DropArtifacts, digest
from ...domain.errors import StudioError
from ...domain.milvus import display_uri, lite_fingerprint
from ...domain.record import StageRecord
from ...domain.store import SCHEMA_VERSION, ImageCollection, row_facts, row_id
from ..campaigns.logic import campaign_png_entries
from ..campaigns.scores import Thresholds, flagged, read_image_vectors, read_scores, summary
from ..collection.logic import rows_digest, verified_unchanged

if TYPE_CHECKING:
    from ...domain.encoder import ClipEncoder

FILES = ("campaign-index.json",)


@dataclass(frozen=True)
class CampaignIndexReport:
    images: int
    encoded: int
    upserted: int
    deleted: int
    indexed: int
    synced: bool  # False: nothing changed since a verified sync, Milvus not opened
    key: str = ""  # the rows' digest


def _record(art: DropArtifacts) -> StageRecord:
    return StageRecord(art, "campaign-index.json", key_field="rows_digest")


def campaign_rows(art: DropArtifacts, known: dict[str, dict]) -> tuple[list[dict], dict[str, dict]]:
    """(one row per distinct PNG, the facts of every PNG by path). A PNG whose size and version are those
    in `known` is not read again."""
    files: dict[str, dict] = {}
    for e in campaign_png_entries(art):
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


def row_scores(files: DropArtifacts, limits: Thresholds) -> dict[str, dict]:
    """campaign/<stem>.png -> what its row holds of its scores (the serving model's, in `files`)."""
    stored = read_scores(files)
    flags = flagged(stored, limits)
    rows = {}
    for image, s in (stored.get("images") or {}).items():
        line = summary(s)
        rows[image] = {"fidelity": line["product_fidelity"], "prompt_match": line["prompt_match"], "flagged": image in flags}
    return rows


def index_campaign_images(drop: str, art: DropArtifacts, model_id: str, load_encoder: Callable[[], "ClipEncoder"],
                          open_store: Callable[[], ImageCollection], uri: str, collection: str,
                          model_files: DropArtifacts | None = None, transition: str | None = None) \
        -> CampaignIndexReport:
    """`model_files`: the model's files of the drop (its record is there); `transition`: the change of model this
    builds (domain/search_models.py)."""
    record = _record(model_files or art)
    last = record.last
    rows, files = campaign_rows(art, last.get("files", {}))
    scores = row_scores(model_files or art, Thresholds.from_settings())
    for r in rows:
        r["scores"] = scores.get(r["path"])
    digest_now = digest({"rows": rows_digest(drop, rows, model_id, collection, display_uri(uri)),
                         "scores": sorted((r["sha256"], row_facts(r).scores) for r in rows)})
    never_indexed = not rows and not last.get("indexed")
    if never_indexed or record.kept(digest_now, intact=verified_unchanged(lite_fingerprint(uri))):
        if transition and not never_indexed:
            record.write(digest_now, **{**last, "transition": transition})
        return CampaignIndexReport(len(rows), 0, 0, 0, last.get("indexed", 0), synced=False, key=digest_now)
    rewrite_all = last.get("model_id") not in (None, model_id)
    with open_store() as store:
        todo = store.changed_rows(drop, rows, rewrite_all) if rows else []
        # campaign_images encoded what it scored with this model: those vectors are not computed again.
        known = read_image_vectors(model_files or art) if todo else {}
        if todo and not rewrite_all:  # the same bytes are the same row: its stored vector is this model's
            stored = store.vectors([row_id(drop, r["sha256"]) for r in todo if r["sha256"] not in known])
            known.update({i.rpartition("/")[2]: v for i, v in stored.items()})
        reused = [{**r, "vector": known[r["sha256"]]} for r in todo if r["sha256"] in known]
        todo = [r for r in todo if r["sha256"] not in known]
        encoder = load_encoder() if todo else None
        batch = encoder.embed_images([art / r["path"] for r in todo]) if todo else None
        if batch is not None and batch.failures:
            bad = ", ".join(todo[i]["path"] for i, _ in batch.failures)
            raise StudioError(f"{drop}: campaign images that do not decode: {bad}")
        dim = encoder.dim if encoder else (len(reused[0]["vector"]) if reused else store.dim())
        encoded = reused + ([{**todo[i], "vector": v} for i, v in zip(batch.indices, batch.vectors)] if batch else [])
        # Only the rows encoded here are sent; the others are kept as stored, or deleted when gone.
        done = store.sync_drop(drop, rows, dim, rewrite_all=rewrite_all, write=encoded) if dim else None
    indexed = len(done.ids) if done else 0
    verified = done and done.ids == {row_id(drop, r["sha256"]) for r in rows}
    facts = {"transition": transition} if transition and verified else {}
    record.write(digest_now, collection=collection, model_id=model_id, indexed=indexed, schema=SCHEMA_VERSION,
                 files=files, verified_fingerprint=store.fingerprint_at_close if verified else None, **facts)
    return CampaignIndexReport(len(rows), len(todo), done.upserted if done else 0, done.deleted if done else 0,
                               indexed, synced=True, key=digest_now)
