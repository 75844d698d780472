"""The embedding stage: one CLIP vector per distinct valid image of a drop, reused by content hash.

Split the way clip-retrieval does it: the reader and mapper are `ClipEncoder.iter_image_batches` (a
DataLoader decoding in its workers, one batched forward pass per batch); the writer is `EmbeddingWriter`,
which keeps every finished batch at once (a killed run resumes from them) and `flush()`es the drop's final
file. `embed_drop` is the runner: `writer.write(mapper(batch))` for each batch, then `writer.flush()`.

Files the encoder cannot read (PIL accepted them at scan time) are recorded in the stage's own
`embeddings.json`; the manifest stays as the scan wrote it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .artifacts import DropArtifacts
from .drops import ProductDrop

if TYPE_CHECKING:  # torch is imported only by a run that encodes
    from .encoder import ClipEncoder, EmbedProgress


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
        self.art.write_partial_batch(sha256, vectors, self.model_id)
        self.vectors.update(zip(sha256, vectors))

    def flush(self, order: list[str], dim: int, rejected: list[dict], previous: tuple[list[str], str | None, list]) \
            -> tuple[int, bool]:
        """Write the final file in manifest order (only when it changed) and drop the partial batches.
        Returns (rows, whether the file was written)."""
        kept = [h for h in order if h in self.vectors]
        matrix = np.stack([self.vectors[h] for h in kept]) if kept else np.zeros((0, dim), np.float32)
        changed = (kept, self.model_id, rejected) != previous
        if changed:
            self.art.write_embeddings(kept, matrix, self.model_id, rejected)
        self.art.clear_partial_batches()
        return len(kept), changed


def embed_drop(drop: ProductDrop, art: DropArtifacts, model_id: str, load_encoder: Callable[[], "ClipEncoder"],
               on_progress: Callable[["EmbedProgress"], None] | None = None,
               log: Callable[[str], None] = lambda m: None) -> EmbeddingReport:
    """Embed the drop's distinct images that have no vector for `model_id` yet. `load_encoder` is called
    only when something needs encoding (or a first, empty run needs the model's dimension)."""
    unique = art.read_manifest().unique_images
    old_sha, old_vecs, old_model = art.read_embeddings()
    same_model = old_model == model_id
    old_rejected = art.embeddings_info().get("rejected", []) if same_model else []
    known = dict(zip(old_sha, old_vecs)) if same_model else {}
    resumed = art.read_partial_batches(model_id)  # batches a killed run finished
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
    rows, written = writer.flush(list(unique["sha256"]), dim, rejected,
                                 previous=(list(old_sha), old_model, old_rejected))
    new_rejects = len(rejected) - len(still_bad)
    return EmbeddingReport(
        model_id=model_id, dim=dim, vectors=rows, encoded=len(todo) - new_rejects,
        reused=len(unique) - len(todo) - len(still_bad), resumed=len(resumed), rejected=rejected,
        device=encoder.device if encoder else EmbeddingReport.device,
        batch_size=encoder.batch_size if encoder else 0, seconds=seconds, written=written,
    )
