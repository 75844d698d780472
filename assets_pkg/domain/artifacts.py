"""Where each step of a drop keeps its output, as plain files people can open.

    <artifacts_dir>/<drop>/
        manifest.parquet      valid images (path, sha256, width, height, format, bytes)
        rejected.json         [{file, reason}]
        embeddings.parquet    sha256 -> vector (float32, unit norm)
        embeddings.json       model id and dim the vectors came from; files the encoder could not read
        collection.json       model id, collection and rows digest last synced to Milvus
        briefs.json           validated briefs
        references.json       {brief id: [{path, score, sha256}]}
        references.inputs.json  key of the briefs, model and rows the references were searched with
        campaign/<brief>.png  generated image, with <brief>.json sidecar (<brief>.v2.png ... for variants)
        campaign-batch.json   the Batch API job campaign images wait on (GEMINI_MODE=batch)
        sheets/*.jpg          contact sheets shown in the UI
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .briefs import Brief
from .drops import MANIFEST_COLUMNS, Manifest, local_folder


def write_atomic(path: Path, data: bytes | Callable[[Path], object]) -> None:
    """Write `data` (bytes, or a function that writes the file it is given) to a temporary name beside
    `path`, then rename: a crash never leaves half a file. The temporary name is unique per process and
    thread, because two runs of one drop may write at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data) if isinstance(data, bytes) else data(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False).encode())


def _vectors_table(sha256: list[str], vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table({
        "sha256": pa.array(sha256, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
    })


def _read_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    dim = table.schema.field("vector").type.list_size
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return table.column("sha256").to_pylist(), np.asarray(flat, dtype=np.float32).reshape(-1, dim)


def digest(obj) -> str:
    """A short, stable key of a JSON-able value (dict order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]


def read_json(path: Path, default=None):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


@dataclass(frozen=True)
class DropArtifacts:
    root: Path

    @classmethod
    def at(cls, artifacts_dir: str | Path, drop: str) -> "DropArtifacts":
        return cls(local_folder("ARTIFACTS_DIR", artifacts_dir) / drop)

    # -- manifest ----------------------------------------------------------
    def write_manifest(self, manifest: Manifest) -> None:
        write_atomic(self.root / "manifest.parquet", lambda tmp: manifest.images.to_parquet(tmp, index=False))
        write_json(self.root / "rejected.json", manifest.rejected)

    def read_manifest(self) -> Manifest | None:
        path = self.root / "manifest.parquet"
        if not path.exists():
            return None
        images = pd.read_parquet(path)
        return Manifest(images=images[MANIFEST_COLUMNS], rejected=read_json(self.root / "rejected.json", []))

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
        path = self.root / "embeddings.parquet"
        info = self.embeddings_info()
        if not path.exists():
            return [], np.zeros((0, info.get("dim", 0)), np.float32), None
        sha, vectors = _read_vectors(path)
        return sha, vectors, info.get("model_id")

    def rejected_files(self) -> list[dict]:
        """Every file of the drop left out, with the reason: at scan time, then by the encoder."""
        manifest = self.read_manifest()
        found = (manifest.rejected if manifest else []) + [
            {"file": r["file"], "reason": r["reason"]} for r in self.embeddings_info().get("rejected", [])]
        return sorted(found, key=lambda r: r["file"])

    # -- embeddings of an interrupted run -----------------------------------
    @property
    def partial_dir(self) -> Path:
        return self.root / "embeddings.partial"

    def write_partial_batch(self, sha256: list[str], vectors: np.ndarray, model_id: str) -> None:
        """Keep a finished batch at once, so a killed run loses at most the batch in flight."""
        if sha256:
            name = f"{model_id.replace('/', '_')}--{os.getpid()}-{sha256[0][:16]}.parquet"
            write_atomic(self.partial_dir / name, lambda tmp: pq.write_table(_vectors_table(sha256, vectors), tmp))

    def read_partial_batches(self, model_id: str) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        prefix = model_id.replace("/", "_") + "--"
        for path in sorted(self.partial_dir.glob(prefix + "*.parquet")) if self.partial_dir.exists() else []:
            found.update(zip(*_read_vectors(path)))
        return found

    def clear_partial_batches(self) -> None:
        if self.partial_dir.exists():
            shutil.rmtree(self.partial_dir, ignore_errors=True)

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
        if not (self.root / "references.json").exists():
            return ""
        return read_json(self.root / "references.inputs.json", {}).get("inputs_key", "")

    # -- campaign outputs --------------------------------------------------
    @property
    def campaign_dir(self) -> Path:
        return self.root / "campaign"

    @property
    def campaign_batch_path(self) -> Path:
        """The Batch API job the drop's campaign images wait on (GEMINI_MODE=batch)."""
        return self.root / "campaign-batch.json"

    def sheet_path(self, name: str) -> Path:
        return self.root / "sheets" / f"{name}.jpg"
