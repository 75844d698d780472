"""CLIP image and text embeddings: the reader and mapper of the embedding stage (its writer is
stages/embeddings/logic.py).

- reader: a torch DataLoader whose workers open, orient and preprocess images;
  files that fail to decode are dropped in `collate` and reported, not fatal;
- mapper: one batched forward pass per batch, L2-normalised, float32 out.
Batches are yielded as they come (`iter_image_batches`), so memory stays flat
whatever the size of the drop.
"""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .drops import load_rgb
from .errors import EncoderError, StudioError
from .clip_loading import load_clip
from .model_id import FIT_MODES, clip_model_id
from .storage import URL_RE, as_path, image_source
from .settings import DEFAULTS



def resolve_device(device: str = "auto") -> str:
    if device in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderError(f"CLIP_DEVICE={device!r} but no CUDA device is available")
    return device


def pad_to_square(img: Image.Image, fill=(255, 255, 255)) -> Image.Image:
    """Letterbox: the whole product stays in frame, on a white background."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str | Path], preprocess, fit: str, resolution: int):
        # Strings (local paths or object URLs) pickle and fork safely into DataLoader workers.
        self.paths = [str(p) for p in paths]
        self.preprocess = preprocess
        self.fit = fit
        self.resolution = resolution
        # Objects in a bucket: waiting on the network, not the CPU, so more fetches in flight per process.
        self.remote = bool(self.paths) and URL_RE.match(self.paths[0]) is not None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitems__(self, indices: list[int]):
        # Batched fetch with threads: in the main process (no DataLoader workers), since PIL releases
        # the GIL while decoding and resizing; and in every worker for objects in a bucket, whose
        # fetches wait on the network.
        from torch.utils.data import get_worker_info

        if len(indices) < 2 or (get_worker_info() is not None and not self.remote):
            return [self[i] for i in indices]
        if self._pool is None or self._pool_pid != os.getpid():  # a forked worker gets its own threads
            self._pool = ThreadPoolExecutor(max_workers=16 if self.remote else os.cpu_count() or 1)
            self._pool_pid = os.getpid()
        return list(self._pool.map(self.__getitem__, indices))

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False)
        self._pool = None

    def __getitem__(self, i: int):
        try:
            source = image_source(as_path(self.paths[i]))
        except StudioError:
            raise  # the store itself failed (access, endpoint): the run stops, no file is blamed for it
        except OSError as e:
            return i, None, f"unreadable: {e.strerror or e}"
        try:
            return i, prepare(source, self.preprocess, self.fit, self.resolution), None
        except Exception as e:  # any decode problem rejects this file only
            return i, None, f"cannot decode: {e}"


def prepare(source, preprocess, fit: str, resolution: int) -> torch.Tensor:
    """One image as the model takes it: opened as a person sees it, letterboxed (fit=pad), preprocessed."""
    img = load_rgb(source, min_side=resolution)
    if fit == "pad":
        img = pad_to_square(img)
    return preprocess(img)


def _collate(items):
    ok = [(i, t) for i, t, err in items if err is None]
    failures = [(i, err) for i, t, err in items if err is not None]
    if ok:
        idx, tensors = zip(*ok)
        return list(idx), torch.stack(tensors), failures
    return [], None, failures


@dataclass
class ImageBatch:
    indices: list[int]  # positions in the input list
    vectors: np.ndarray  # (len(indices), dim) float32, unit norm
    failures: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class EmbedProgress:
    done: int
    total: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


class ClipEncoder:
    """A loaded CLIP model, used for batched image and text embeddings. Whoever creates one owns the weights'
    memory: in Dagster the `clip` resource, once per run (see resources.py)."""

    def __init__(
        self,
        model: str = DEFAULTS["CLIP_MODEL"],
        device: str = DEFAULTS["CLIP_DEVICE"],
        batch_size: int = DEFAULTS["CLIP_BATCH_SIZE"],
        num_workers: int = DEFAULTS["CLIP_NUM_WORKERS"],
        fit: str = DEFAULTS["CLIP_FIT"],
        download_root: str | None = None,
    ):
        if fit not in FIT_MODES:
            raise EncoderError(f"CLIP_FIT={fit!r}: use one of {', '.join(FIT_MODES)}")
        self.model_name = model
        self.device = resolve_device(device)
        self.fit = fit
        self._batch_size = batch_size
        self._num_workers = num_workers
        self.loaded = load_clip(model, self.device, download_root)
        self.model, self.preprocess = self.loaded.model, self.loaded.preprocess

    def close(self) -> None:
        """Free the weights (and, on a GPU, the memory they held) now rather than at garbage collection."""
        self.model = self.preprocess = self.loaded = None
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    @property
    def dim(self) -> int:
        return self.loaded.dim

    @property
    def resolution(self) -> int:
        """The side of the square the model's own preprocessing makes."""
        return self.loaded.resolution

    @property
    def model_id(self) -> str:
        """Identifies the weights (see model_id.py); embeddings are reused only while it stays the same."""
        return clip_model_id(self.model_name)

    @property
    def batch_size(self) -> int:
        if self._batch_size > 0:
            return self._batch_size
        return 256 if self.device.startswith("cuda") else 32

    @property
    def num_workers(self) -> int:
        if self._num_workers >= 0:
            return self._num_workers
        cpus = os.cpu_count() or 1
        if self.device.startswith("cuda"):
            return min(8, cpus)
        # On CPU the model forward already uses every core; separate decoding processes only
        # compete with it. Small machines decode in the main process between batches (with
        # threads, see __getitems__), which measured fastest on 2 cores (benchmarks/).
        return cpus // 4

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.visual.parameters()).dtype

    # -- mapper ------------------------------------------------------------
    @torch.inference_mode()
    def _encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        feats = self.model.encode_image(pixels).float()
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 text embeddings; texts longer than the model's context are truncated."""
        tokens = self.loaded.tokenize(list(texts))
        if self.loaded.trim_padding:
            # The text transformer is causal and reads its output at the end-of-text token, so
            # the zero padding after it changes nothing: dropping it gives the same vectors
            # several times faster (a 6-token query costs 8 positions instead of 77).
            tokens = tokens[:, : int((tokens != 0).sum(dim=1).max())]
        tokens = tokens.to(self.device)
        feats = self.model.encode_text(tokens).float()
        feats = feats / feats.norm(dim=-1, keepdim=True)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def embed_image_bytes(self, data: bytes) -> np.ndarray:
        """The (1, dim) embedding of one image held in memory (a picture to search by), preprocessed exactly
        as a drop's images are."""
        pixels = prepare(io.BytesIO(data), self.preprocess, self.fit, self.resolution)
        return self._encode_pixels(pixels[None])

    # -- reader + mapper ---------------------------------------------------
    def iter_image_batches(
        self,
        paths: Sequence[str | Path],
        on_progress: Callable[[EmbedProgress], None] | None = None,
    ) -> Iterator[ImageBatch]:
        """Embed images batch by batch; undecodable files come back as failures."""
        if not paths:
            return
        workers = self.num_workers if len(paths) > self.batch_size else 0
        dataset = _ImageFiles(paths, self.preprocess, self.fit, self.resolution)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=self.device.startswith("cuda"),
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )
        start = time.perf_counter()
        done = 0
        try:
            for indices, pixels, failures in loader:
                vectors = self._encode_pixels(pixels) if pixels is not None else np.zeros((0, self.dim), np.float32)
                done += len(indices) + len(failures)
                yield ImageBatch(indices, vectors, failures)
                if on_progress:
                    on_progress(EmbedProgress(done, len(paths), time.perf_counter() - start))
        except StudioError as e:
            # Raised in a DataLoader worker, it comes back with the worker's traceback in its text;
            # its last line is the error itself.
            lines = str(e).strip().splitlines()
            if len(lines) > 1:
                raise type(e)(lines[-1].split(": ", 1)[-1]) from None
            raise
        finally:
            dataset.close()

    def embed_images(self, paths: Sequence[str | Path], on_progress=None) -> ImageBatch:
        """All of `paths` at once (for small inputs and tests): one ImageBatch in input order."""
        indices: list[int] = []
        chunks: list[np.ndarray] = []
        failures: list[tuple[int, str]] = []
        for batch in self.iter_image_batches(paths, on_progress):
            indices += batch.indices
            chunks.append(batch.vectors)
            failures += batch.failures
        vectors = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
        return ImageBatch(indices, vectors, failures)
