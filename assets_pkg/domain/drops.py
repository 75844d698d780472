"""Product drops on disk: naming, discovery, and the manifest of a drop's images.

A drop is a folder `<drops_dir>/<drop>/` of product images released together, on disk or under an
object-store prefix (see storage.py). Its manifest has one row per valid image file (relative path,
sha256 of the bytes, size, format, version) and a list of rejected files with the reason.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pandas as pd
from PIL import Image, ImageOps

from . import storage
from .catalog import CATALOG_FILE
from .errors import InvalidDropName, StudioError
from .settings import DEFAULTS
from .storage import AnyPath, Entry

# Drop names become Dagster partition keys, Milvus filter values and folder
# names, so only a conservative character set is accepted.
DROP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

# `version`: the file's modification time in ns, or an object's ETag; with the size, it tells whether a
# file must be read again.
MANIFEST_COLUMNS = ["path", "sha256", "width", "height", "format", "bytes", "version"]


def validate_drop_name(name: str) -> str:
    if not isinstance(name, str) or not DROP_NAME_RE.fullmatch(name):
        raise InvalidDropName(
            f"invalid drop name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ProductDrop:
    name: str
    folder: AnyPath

    @classmethod
    def at(cls, drops_dir: str | Path, name: str) -> "ProductDrop":
        return cls(validate_drop_name(name), storage.location("DROPS_DIR", drops_dir) / name)

    @property
    def briefs_file(self) -> AnyPath:
        return self.folder / "briefs.yaml"

    @property
    def catalog_file(self) -> AnyPath:
        return self.folder / CATALOG_FILE


@dataclass
class DropListing:
    drops: list[ProductDrop]
    invalid: list[str] = field(default_factory=list)  # folder names that are not valid drop names


def drops_root(drops_dir: str | Path) -> AnyPath:
    """DROPS_DIR, which must be an existing folder or a bucket prefix holding objects: a typo must not
    look like an empty library."""
    root = storage.location("DROPS_DIR", drops_dir)
    if not storage.is_folder(root):
        if not storage.is_remote(root) and root.exists():
            raise StudioError(f"DROPS_DIR={drops_dir}: not a folder")
        raise StudioError(f"DROPS_DIR={drops_dir}: " + ("no such folder" if not storage.is_remote(root)
                                                        else "no objects under this prefix"))
    return root


def discover_drops(drops_dir: str | Path) -> DropListing:
    """Every visible sub-folder (or sub-prefix) of `drops_dir` is a drop; badly named ones are listed apart."""
    root = drops_root(drops_dir)
    listing = DropListing([])
    for name, is_folder in storage.list_folders(root):
        if not is_folder:
            continue
        if DROP_NAME_RE.fullmatch(name):
            listing.drops.append(ProductDrop(name, root / name))
        else:
            listing.invalid.append(name)
    return listing


@dataclass
class Manifest:
    """Valid images of a drop (one row per file) and rejected files with reasons."""

    images: pd.DataFrame
    rejected: list[dict] = field(default_factory=list)  # [{"file": ..., "reason": ...}]

    @property
    def unique_images(self) -> pd.DataFrame:
        """One row per distinct content; `aliases` lists the other names of the same bytes."""
        df = self.images.sort_values("path")
        firsts = df.drop_duplicates("sha256", keep="first").copy()
        # Only contents stored under several names have aliases; grouping just those keeps this linear.
        shared = df[df["sha256"].duplicated(keep=False)]
        names = shared.groupby("sha256")["path"].agg(list).to_dict()
        firsts["aliases"] = [names.get(h, [None])[1:] for h in firsts["sha256"]]
        return firsts.reset_index(drop=True)


def load_rgb(path: AnyPath | str | BinaryIO, min_side: int | None = None) -> Image.Image:
    """Open a product image (a path, a URL, or an open file) as it looks to a person: EXIF
    orientation applied, first frame of animations, transparency composited on white, 8-bit RGB.

    With `min_side`, JPEGs are decoded at a reduced scale that still keeps both sides
    at least that long (DCT scaling): several times faster for large photos that are
    about to be shrunk to CLIP's 224 pixels anyway."""
    source = path if hasattr(path, "read") else storage.image_source(storage.as_path(path))
    with Image.open(source) as im:
        if min_side and im.format == "JPEG":
            im.draft("RGB", (min_side, min_side))
        im.seek(0)
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit grayscale: scale to 8 bits instead of clipping to white
            im = im.point(lambda v: v / 256).convert("L")
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            return canvas.convert("RGB")
        return im.convert("RGB")


def _image_entries(entries: list[Entry]) -> list[Entry]:
    """Files with an image extension; other types are skipped silently."""
    return [e for e in entries if Path(e.rel).suffix.lower() in IMAGE_EXTENSIONS]


def _inspect(entry: Entry, max_pixels: int) -> dict:
    """Hash and fully decode one file; returns a manifest row or {"file", "reason"} (with "bytes" and
    "version" when the verdict is about the content, so an unchanged bad file is not read again)."""
    rel = entry.rel
    if entry.problem:
        return {"file": rel, "reason": entry.problem}
    if entry.size == 0:
        return {"file": rel, "reason": "empty file"}
    try:
        data = storage.read_bytes(entry.path)
    except OSError as e:
        return {"file": rel, "reason": f"unreadable: {e.strerror or e}"}
    verdict = decode_problem(data, max_pixels)
    if isinstance(verdict, str):
        return {"file": rel, "reason": verdict, "bytes": entry.size, "version": entry.version}
    w, h, fmt = verdict
    return {
        "path": rel,
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": int(w),
        "height": int(h),
        "format": str(fmt),
        "bytes": len(data),
        "version": entry.version,
    }


def decode_problem(data: bytes, max_pixels: int) -> str | tuple[int, int, str]:
    """(width, height, format) when the bytes are a whole image within the limit, else what is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h, fmt = im.width, im.height, im.format
                if w * h > max_pixels:
                    return f"{w}x{h} pixels is over the limit of {max_pixels} pixels"
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return f"decompression bomb: {e}"
    except Image.UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as e:
        return f"cannot decode: {e}"
    return w, h, fmt


def scan_drop(
    drop: ProductDrop,
    previous: pd.DataFrame | None = None,
    max_pixels: int = DEFAULTS["MAX_IMAGE_PIXELS"],
    threads: int | None = None,
    previous_rejected: list[dict] = (),
) -> Manifest:
    """Build the manifest of a drop.

    Files whose size and version (modification time, or an object's ETag) match `previous` keep their row,
    and bad files in `previous_rejected` their verdict, without being read again: re-scanning an unchanged
    drop costs one listing.
    """
    if not storage.is_folder(drop.folder):
        raise StudioError(f"drop folder not found: {drop.folder}")
    known: dict[str, dict] = {}
    if previous is not None and len(previous):
        known = {r["path"]: r for r in previous.to_dict("records")}

    rows: list[dict] = []
    rejected: list[dict] = []
    todo: list[Entry] = []
    known_bad = {r["file"]: r for r in previous_rejected if "version" in r}
    for entry in _image_entries(storage.list_files(drop.folder)):
        old, bad = known.get(entry.rel), known_bad.get(entry.rel)
        if old is not None and entry.problem is None and entry.size == old["bytes"] and entry.version == old["version"]:
            rows.append({k: old[k] for k in MANIFEST_COLUMNS})
        elif bad is not None and entry.problem is None and (entry.size, entry.version) == (bad["bytes"], bad["version"]):
            rejected.append(bad)
        else:
            todo.append(entry)

    # PIL releases the GIL while decoding, so threads give real parallelism here; an object store's
    # latency wants more requests in flight than there are cores.
    threads = threads or (4 if not storage.is_remote(drop.folder) else 16)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for result in pool.map(lambda e: _inspect(e, max_pixels), todo):
            (rejected if "reason" in result else rows).append(result)

    images = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("path").reset_index(drop=True)
    return Manifest(images=images, rejected=sorted(rejected, key=lambda r: r["file"]))


def drop_fingerprint(drop: ProductDrop) -> str:
    """A cheap fingerprint of a drop's content from one listing: names, sizes and versions (modification
    time, or an object's ETag) of its image files, briefs.yaml and products.csv. Any add, replace or remove changes it,
    and nothing is downloaded: reading every file on every sensor tick would not scale to large libraries."""
    h = hashlib.sha256()
    entries = storage.list_files(drop.folder)
    described = (drop.briefs_file.name, drop.catalog_file.name)
    for e in _image_entries(entries) + [e for e in entries if e.rel in described]:
        h.update(f"{e.rel}\0{e.size}\0{e.version}\0{e.problem or ''}\n".encode())
    return h.hexdigest()[:32]
