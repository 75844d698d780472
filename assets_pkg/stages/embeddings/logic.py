"""The embedding stage: one CLIP vector per distinct valid image of a drop, reused by content hash.

Split the way clip-retrieval does it: the reader and mapper are `ClipEncoder.iter_image_batches` (a
DataLoader decoding in its workers, one batched forward pass per batch); the writer is `EmbeddingWriter`,
which keeps every finished batch at once (a killed run resumes from them) and `flush()`es the drop's final
file. `embed_drop` is the runner: `writer.write(mapper(batch))` for each batch, then `writer.flush()`.

Files the encoder cannot read (PIL accepted them at scan time) are recorded in the stage's own
`embeddings.json`; the manifest stays as the scan wrote it.

Files, one set per model (the first model's in the drop's artifacts, each later one's under
`models/<model key>/`, see domain/search_models.py): embeddings.parquet (sha256 -> vector, float32, unit
norm), embeddings.json (the model id and dim the vectors came from; files the encoder could not read) and,
while a run is interrupted, embeddings.partial/ (its finished batches).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ...domain import listing, storage
from ...domain.artifacts import DropArtifacts, digest, read_parquet
from ...domain.drops import ProductDrop
from ...domain.record import inputs_key
from ...domain.storage import AnyPath, write_atomic
from ..scan.logic import read_manifest

# embeddings.verified.json: what the blocking check last read whole and found sound (checks.py).
FILES = ("embeddings.parquet", "embeddings.json", "embeddings.partial/", "embeddings.verified.json")

if TYPE_CHECKING:  # torch is imported only by a run that encodes
    from ...domain.encoder import ClipEncoder, EmbedProgress


def vectors_table(sha256: list[str], vectors: np.ndarray) -> pa.Table:
    """sha256 -> vector as a parquet table (the embeddings' layout; campaign vectors use it too)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.table({
        "sha256": pa.array(sha256, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
    })


def read_vectors(path: AnyPath) -> tuple[list[str], np.ndarray]:
    table = read_parquet(path)
    dim = table.schema.field("vector").type.list_size
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return table.column("sha256").to_pylist(), np.asarray(flat, dtype=np.float32).reshape(-1, dim)


def write_embeddings(art: DropArtifacts, sha256: list[str], vectors: np.ndarray, model_id: str,
                     rejected: list[dict] | None = None) -> None:
    """`rejected`: [{file, sha256, reason}] that PIL accepted at scan time but the encoder could not read."""
    write_atomic(art / "embeddings.parquet", lambda tmp: pq.write_table(vectors_table(sha256, vectors), tmp))
    # `vectors`: which vectors these are, so a reader of the parquet (the campaign scores' median) knows
    # from this small file whether they changed.
    art.write_json("embeddings.json", {"model_id": model_id, "dim": int(vectors.shape[1]), "rows": len(sha256),
                                       "rejected": rejected or [], "vectors": digest(sha256)})


def embeddings_info(art: DropArtifacts) -> dict:
    """The model id, dimension, row count and encoder rejections the embeddings were written with."""
    return art.read_json("embeddings.json", {})


def read_embeddings(art: DropArtifacts) -> tuple[list[str], np.ndarray, str | None]:
    """(sha256 list, vectors, model id); empty when nothing was embedded yet."""
    info = embeddings_info(art)
    try:
        sha, vectors = read_vectors(art / "embeddings.parquet")
    except FileNotFoundError:
        return [], np.zeros((0, info.get("dim", 0)), np.float32), None
    return sha, vectors, info.get("model_id")


def rejected_files(art: DropArtifacts, files: DropArtifacts | None = None) -> list[dict]:
    """Every file of the drop left out, with the reason: at scan time, then by the encoder (of the model
    whose `files` these are)."""
    manifest = read_manifest(art)
    found = [{"file": r["file"], "reason": r["reason"]}
             for r in (manifest.rejected if manifest else []) + embeddings_info(files or art).get("rejected", [])]
    return sorted(found, key=lambda r: r["file"])


# -- the batches of an interrupted run ------------------------------------------
def partial_dir(art: DropArtifacts) -> AnyPath:
    return art / "embeddings.partial"


def write_partial_batch(art: DropArtifacts, sha256: list[str], vectors: np.ndarray, model_id: str) -> None:
    """Keep a finished batch at once, so a killed run loses at most the batch in flight."""
    if sha256:
        name = f"{model_id.replace('/', '_')}--{os.getpid()}-{sha256[0][:16]}.parquet"
        write_atomic(partial_dir(art) / name, lambda tmp: pq.write_table(vectors_table(sha256, vectors), tmp))


def read_partial_batches(art: DropArtifacts, model_id: str) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    prefix = model_id.replace("/", "_") + "--"
    batches = [e for e in listing.list_files(partial_dir(art))
               if e.rel.startswith(prefix) and e.rel.endswith(".parquet")]
    for entry in batches:
        found.update(zip(*read_vectors(entry.path)))
    return found


def clear_partial_batches(art: DropArtifacts) -> None:
    storage.remove_tree(partial_dir(art))


@dataclass
class EmbeddingReport:
    model_id: str
    dim: int
    vectors: int  # rows in the final file
    encoded: int  # encoded by this run
    reused: int  # from the previous file or an interrupted run's batches
    resumed: int  # of which from an interrupted run
    rejected: list[dict] = field(default_factory=list)  # [{file, sha256, reason}]
    device: str = "none (nothing to encode)"
    batch_size: int = 0
    seconds: float = 0.0
    written: bool = False  # whether the final file changed
    vector_hashes: list[str] = field(default_factory=list)  # the contents that have a vector, in manifest order

    @property
    def key(self) -> str:
        """What the collection depends on: the weights, and which contents have a vector."""
        return inputs_key(model=self.model_id, vectors=self.vector_hashes)

    @property
    def images_per_second(self) -> float:
        return round(self.encoded / self.seconds, 1) if self.encoded and self.seconds > 0 else 0.0


class EmbeddingWriter:
    """Collects a drop's vectors: known ones up front, new ones batch by batch as they are encoded."""

    def __init__(self, art: DropArtifacts, model_id: str, known: dict[str, np.ndarray]):
        self.art = art
        self.model_id = model_id
        self.vectors = dict(known)

    def write(self, sha256: list[str], vectors: np.ndarray) -> None:
        write_partial_batch(self.art, sha256, vectors, self.model_id)
        self.vectors.update(zip(sha256, vectors))

    def flush(self, order: list[str], dim: int, rejected: list[dict], previous: tuple[list[str], str | None, list]) \
            -> tuple[list[str], bool]:
        """Write the final file in manifest order (only when it changed) and drop the partial batches.
        Returns (the hashes written, whether the file was written)."""
        kept = [h for h in order if h in self.vectors]
        matrix = np.stack([self.vectors[h] for h in kept]) if kept else np.zeros((0, dim), np.float32)
        changed = (kept, self.model_id, rejected) != previous
        if changed:
            write_embeddings(self.art, kept, matrix, self.model_id, rejected)
        clear_partial_batches(self.art)
        return kept, changed


def embed_drop(drop: ProductDrop, art: DropArtifacts, model_id: str, load_encoder: Callable[[], "ClipEncoder"],
               on_progress: Callable[["EmbedProgress"], None] | None = None,
               log: Callable[[str], None] = lambda m: None, files: DropArtifacts | None = None) -> EmbeddingReport:
    """Embed the drop's distinct images that have no vector for `model_id` yet. `load_encoder` is called
    only when something needs encoding (or a first, empty run needs the model's dimension). `files`: where
    this model's files are kept (domain/search_models; the drop's own artifacts by default)."""
    unique = read_manifest(art).unique_images
    art = files or art  # the manifest is the drop's; everything below is the model's
    old_sha, old_vecs, old_model = read_embeddings(art)
    same_model = old_model == model_id
    old_rejected = embeddings_info(art).get("rejected", []) if same_model else []
    known = dict(zip(old_sha, old_vecs)) if same_model else {}
    resumed = read_partial_batches(art, model_id)  # batches a killed run finished
    known.update(resumed)
    # A file the encoder could not read keeps its verdict while its bytes and the model stay the same.
    present = set(unique["sha256"])
    still_bad = {r["sha256"]: r for r in old_rejected if r["sha256"] in present}
    todo = unique[~unique["sha256"].isin(known.keys()) & ~unique["sha256"].isin(still_bad.keys())]
    todo = todo.reset_index(drop=True)
    dim = old_vecs.shape[1] if same_model and old_vecs.shape[1] else None
    encoder = load_encoder() if len(todo) or dim is None else None
    writer = EmbeddingWriter(art, model_id, {h: known[h] for h in unique["sha256"] if h in known})
    if resumed:
        log(f"{drop.name}: resuming, {len(resumed)} vectors from an interrupted run")
    log(f"{drop.name}: {len(unique)} distinct images, {len(writer.vectors)} reused, {len(todo)} to encode"
        + (f" with {model_id} on {encoder.device} (batch {encoder.batch_size})" if len(todo) else ""))

    rejected = list(still_bad.values())
    start = time.perf_counter()
    paths = [drop.folder / p for p in todo["path"]]
    for batch in encoder.iter_image_batches(paths, on_progress=on_progress) if paths else []:
        writer.write([todo.at[i, "sha256"] for i in batch.indices], batch.vectors)
        rejected += [{"file": todo.at[i, "path"], "sha256": todo.at[i, "sha256"], "reason": reason}
                     for i, reason in batch.failures]
    seconds = time.perf_counter() - start
    rejected.sort(key=lambda r: r["file"])

    dim = dim or encoder.dim
    kept, written = writer.flush(list(unique["sha256"]), dim, rejected,
                                 previous=(list(old_sha), old_model, old_rejected))
    new_rejects = len(rejected) - len(still_bad)
    return EmbeddingReport(
        model_id=model_id, dim=dim, vectors=len(kept), encoded=len(todo) - new_rejects,
        reused=len(unique) - len(todo) - len(still_bad), resumed=len(resumed), rejected=rejected,
        device=encoder.device if encoder else EmbeddingReport.device,
        batch_size=encoder.batch_size if encoder else 0, seconds=seconds, written=written, vector_hashes=kept,
    )
