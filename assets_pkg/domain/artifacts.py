"""Where each step of a drop keeps its output, as plain files people can open, in a local folder or
under an object-store prefix (ARTIFACTS_DIR, see storage.py).

    <artifacts_dir>/<drop>/
        manifest.parquet      valid images (path, sha256, width, height, format, bytes, version)
        rejected.json         [{file, reason}], with bytes and version for a verdict on the content
        catalog.json          validated products.csv rows (file -> sku, name, ...) and rejected rows with lines
        embeddings.parquet    sha256 -> vector (float32, unit norm)
        embeddings.json       model id and dim the vectors came from; files the encoder could not read
        collection.json       model id, collection and rows digest last synced to Milvus
        briefs.json           validated briefs
        references.json       {brief id: [{path, score, sha256, via, sku, name}]}
        references.inputs.json  key of the briefs, model and rows the references were searched with
        campaign/<brief>.png  generated image, with <brief>.json sidecar (<brief>.v2.png ... for variants)
        campaign-batch.json   the Batch API job campaign images wait on (GEMINI_MODE=batch)
        campaign-index.json   the campaign PNGs (size, version, sha256) last synced to the campaign collection
        sheets/*.jpg          contact sheets shown in the UI
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .briefs import Brief
from .catalog import Catalog
from .drops import MANIFEST_COLUMNS, Manifest
from .storage import AnyPath, write_atomic


def write_json(path: AnyPath, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False).encode())


def _vectors_table(sha256: list[str], vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table({
        "sha256": pa.array(sha256, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
    })


def _read_parquet(path: AnyPath) -> pa.Table:
    return pq.read_table(path if not storage.is_remote(path) else io.BytesIO(storage.read_bytes(path)))


def _read_vectors(path: AnyPath) -> tuple[list[str], np.ndarray]:
    table = _read_parquet(path)
    dim = table.schema.field("vector").type.list_size
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return table.column("sha256").to_pylist(), np.asarray(flat, dtype=np.float32).reshape(-1, dim)


def digest(obj) -> str:
    """A short, stable key of a JSON-able value (dict order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def read_json(path: AnyPath, default=None):
    try:
        return json.loads(storage.read_text(path))
    except FileNotFoundError:
        return default


def check_artifacts_dir(artifacts_dir: str | Path) -> None:
    """ARTIFACTS_DIR names a local folder, or a bucket that exists and answers: checked before a run starts."""
    storage.check_access(storage.location("ARTIFACTS_DIR", artifacts_dir))


@dataclass(frozen=True)
class DropArtifacts:
    root: AnyPath  # a local folder, or an object-store prefix (storage.py)

    @classmethod
    def at(cls, artifacts_dir: str | Path, drop: str) -> "DropArtifacts":
        return cls(storage.location("ARTIFACTS_DIR", artifacts_dir) / drop)

    # -- manifest ----------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> None:
        write_atomic(self.root / "manifest.parquet", lambda tmp: manifest.images.to_parquet(tmp, index=False))
        write_json(self.root / "rejected.json", manifest.rejected)

    def read_manifest(self) -> Manifest | None:
        try:
            images = _read_parquet(self.root / "manifest.parquet").to_pandas()
        except FileNotFoundError:
            return None
        # A manifest from before `version` existed: its files are read once more, their vectors reused.
        images = images.reindex(columns=MANIFEST_COLUMNS).fillna({"version": ""})
        return Manifest(images=images, rejected=read_json(self.root / "rejected.json", []))

    # -- catalog -----------------------------------------------------------
    def write_catalog(self, catalog: Catalog) -> bool:
        """Write catalog.json when its content changed; returns whether it did."""
        doc = catalog.to_json()
        if read_json(self.root / "catalog.json") == doc:
            return False
        write_json(self.root / "catalog.json", doc)
        return True

    def read_catalog(self) -> Catalog:
        """The drop's validated catalog; empty for a drop without products.csv (or never scanned)."""
        return Catalog.from_json(read_json(self.root / "catalog.json"))

    # -- embeddings --------------------------------------------------------
    def write_embeddings(self, sha256: list[str], vectors: np.ndarray, model_id: str,
                         rejected: list[dict] | None = None) -> None:
        """`rejected`: [{file, sha256, reason}] that PIL accepted at scan time but the encoder could not read."""
        write_atomic(self.root / "embeddings.parquet", lambda tmp: pq.write_table(_vectors_table(sha256, vectors), tmp))
        write_json(self.root / "embeddings.json", {"model_id": model_id, "dim": int(vectors.shape[1]),
                                                   "rows": len(sha256), "rejected": rejected or []})

    def embeddings_info(self) -> dict:
        """The model id, dimension, row count and encoder rejections the embeddings were written with."""
        return read_json(self.root / "embeddings.json", {})

    def read_embeddings(self) -> tuple[list[str], np.ndarray, str | None]:
        """(sha256 list, vectors, model id); empty when nothing was embedded yet."""
        info = self.embeddings_info()
        try:
            sha, vectors = _read_vectors(self.root / "embeddings.parquet")
        except FileNotFoundError:
            return [], np.zeros((0, info.get("dim", 0)), np.float32), None
        return sha, vectors, info.get("model_id")

    def rejected_files(self) -> list[dict]:
        """Every file of the drop left out, with the reason: at scan time, then by the encoder."""
        manifest = self.read_manifest()
        found = [{"file": r["file"], "reason": r["reason"]}
                 for r in (manifest.rejected if manifest else []) + self.embeddings_info().get("rejected", [])]
        return sorted(found, key=lambda r: r["file"])

    # -- embeddings of an interrupted run -----------------------------------
    @property
    def partial_dir(self) -> AnyPath:
        return self.root / "embeddings.partial"

    def write_partial_batch(self, sha256: list[str], vectors: np.ndarray, model_id: str) -> None:
        """Keep a finished batch at once, so a killed run loses at most the batch in flight."""
        if sha256:
            name = f"{model_id.replace('/', '_')}--{os.getpid()}-{sha256[0][:16]}.parquet"
            write_atomic(self.partial_dir / name, lambda tmp: pq.write_table(_vectors_table(sha256, vectors), tmp))

    def read_partial_batches(self, model_id: str) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        prefix = model_id.replace("/", "_") + "--"
        batches = [e for e in storage.list_files(self.partial_dir)
                   if e.rel.startswith(prefix) and e.rel.endswith(".parquet")]
        for entry in batches:
            found.update(zip(*_read_vectors(entry.path)))
        return found

    def clear_partial_batches(self) -> None:
        storage.remove_tree(self.partial_dir)

    # -- collection sync marker --------------------------------------------
    def read_sync(self) -> dict:
        """What the last sync left in Milvus: model id, collection, server and a digest of the rows."""
        return read_json(self.root / "collection.json", {})

    def mark_synced(self, model_id: str, collection: str, milvus: str = "", rows_digest: str = "", **facts) -> None:
        """`facts`: counts and, for Milvus Lite, the file's fingerprint after a verified sync."""
        write_json(self.root / "collection.json", {"model_id": model_id, "collection": collection,
                                                   "milvus": milvus, "rows_digest": rows_digest, **facts})

    # -- briefs and references ---------------------------------------------
    def write_briefs(self, briefs: list[Brief]) -> None:
        write_json(self.root / "briefs.json", [b.to_dict() for b in briefs])

    def read_briefs(self) -> list[Brief]:
        return [Brief(**b) for b in read_json(self.root / "briefs.json", [])]

    def write_references(self, refs: dict[str, list[dict]], inputs_key: str = "") -> None:
        write_json(self.root / "references.json", refs)
        write_json(self.root / "references.inputs.json", {"inputs_key": inputs_key})

    def read_references(self) -> dict[str, list[dict]]:
        return read_json(self.root / "references.json", {})

    def references_inputs_key(self) -> str:
        """The key of the inputs (briefs, model, Milvus rows) the references were searched with."""
        if not storage.exists(self.root / "references.json"):
            return ""
        return read_json(self.root / "references.inputs.json", {}).get("inputs_key", "")

    # -- campaign outputs --------------------------------------------------
    @property
    def campaign_dir(self) -> AnyPath:
        return self.root / "campaign"

    def campaign_png_entries(self) -> list[storage.Entry]:
        """The generated PNGs as one listing shows them (size and version, nothing read)."""
        return [e for e in storage.list_files(self.campaign_dir) if e.rel.endswith(".png") and "/" not in e.rel]

    def campaign_pngs(self) -> list[AnyPath]:
        return [e.path for e in self.campaign_png_entries()]

    @property
    def campaign_batch_path(self) -> AnyPath:
        """The Batch API job the drop's campaign images wait on (GEMINI_MODE=batch)."""
        return self.root / "campaign-batch.json"

    def sheet_path(self, name: str) -> AnyPath:
        return self.root / "sheets" / f"{name}.jpg"
