"""Which CLIP weights made a vector, known without loading them.

Embeddings are reused only while the weights stay the same, so every run needs the weights' identity.
Loading torch and clip to learn it would cost seconds on runs that encode nothing, and hashing a
300 MB checkpoint costs about a second more; so the identity is a model name, or a checkpoint file's
name and content hash, and that hash is kept in a small cache keyed by the file's path, size and
modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from .artifacts import write_json
from .errors import EncoderError

# The names `clip.load` downloads by (clip.available_models(); a test keeps this list equal to it).
CLIP_MODEL_NAMES = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14",
                    "ViT-L/14@336px")

_LOCK = threading.Lock()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "drop-studio"


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_sha256(path: str | Path) -> str:
    """The file's sha256, hashed once per (path, size, mtime) and then read from the cache."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
    cache = cache_dir() / "checkpoint-sha256.json"
    with _LOCK:
        try:
            known = json.loads(cache.read_text())
        except (OSError, ValueError):
            known = {}
        if key in known:
            return known[key]
        digest = _sha256_of(path)
        known = {k: v for k, v in known.items() if not k.startswith(f"{path}\0")}  # older versions of the file
        known[key] = digest
        try:
            write_json(cache, known)
        except OSError:
            pass  # a read-only home only costs hashing again next time
        return digest


OPEN_CLIP = "open_clip:"


def open_clip_parts(name: str) -> tuple[str, str] | None:
    """(architecture, pretrained tag or weights file) of `open_clip:<architecture>:<tag or path>`; None for
    a `clip` name or checkpoint."""
    if not name.startswith(OPEN_CLIP):
        return None
    arch, sep, pretrained = name[len(OPEN_CLIP):].partition(":")
    if not arch or not sep or not pretrained:
        raise EncoderError(f"CLIP_MODEL={name!r}: write open_clip:<architecture>:<pretrained tag>, e.g. "
                           f"open_clip:ViT-B-32:laion2b_s34b_b79k, or open_clip:<architecture>:/path/to/weights")
    return arch, pretrained


def _is_weights_path(pretrained: str) -> bool:
    return "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


def clip_model_id(name: str) -> str:
    """`ViT-B/32` for a named model; `<file name>@<first 16 hex of sha256>` for a checkpoint file;
    `open_clip:<architecture>:<tag>` for open_clip weights by tag, `open_clip:<architecture>:<file name>@<hash>`
    for open_clip weights in a file."""
    parts = open_clip_parts(name)
    if parts is not None:
        arch, pretrained = parts
        if Path(pretrained).is_file():
            return f"{OPEN_CLIP}{arch}:{Path(pretrained).name}@{checkpoint_sha256(pretrained)[:16]}"
        if _is_weights_path(pretrained):
            raise EncoderError(f"CLIP_MODEL={name!r}: no such weights file {pretrained!r}")
        return name
    if Path(name).is_file():
        return f"{Path(name).name}@{checkpoint_sha256(name)[:16]}"
    if name in CLIP_MODEL_NAMES:
        return name
    raise EncoderError(
        f"CLIP_MODEL={name!r}: no such checkpoint file and not a CLIP model name ({', '.join(CLIP_MODEL_NAMES)})"
    )


FIT_MODES = ("pad", "crop")  # letterbox onto a white square, or CLIP's own centre crop


def embedding_id(model_id: str, fit: str) -> str:
    """What made a vector: the weights, and how the picture was fitted to their square input. `pad` (the one
    way every release before `CLIP_FIT` had) is the weights' id alone, so existing vectors keep their id;
    another fit is part of the id, so switching to it encodes every image again, once."""
    if fit not in FIT_MODES:
        raise EncoderError(f"CLIP_FIT={fit!r}: use one of {', '.join(FIT_MODES)}")
    return model_id if fit == "pad" else f"{model_id}+{fit}"
