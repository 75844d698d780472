"""Product drops on disk: naming, discovery, and the manifest of a drop's images.

A drop is a folder `<drops_dir>/<drop>/` of product images released together.
Its manifest has one row per valid image file (relative path, sha256 of the
bytes, size, format) and a list of rejected files with the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps

from .errors import InvalidDropName, StudioError
from .settings import DEFAULTS

# Drop names become Dagster partition keys, Milvus filter values and folder
# names, so only a conservative character set is accepted.
DROP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

MANIFEST_COLUMNS = ["path", "sha256", "width", "height", "format", "bytes", "mtime_ns"]


def validate_drop_name(name: str) -> str:
    if not isinstance(name, str) or not DROP_NAME_RE.fullmatch(name):
        raise InvalidDropName(
            f"invalid drop name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ProductDrop:
    name: str
    folder: Path

    @classmethod
    def at(cls, drops_dir: str | Path, name: str) -> "ProductDrop":
        return cls(validate_drop_name(name), local_folder("DROPS_DIR", drops_dir) / name)

    @property
    def briefs_file(self) -> Path:
        return self.folder / "briefs.yaml"


@dataclass
class DropListing:
    drops: list[ProductDrop]
    invalid: list[str] = field(default_factory=list)  # folder names that are not valid drop names


URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def local_folder(setting: str, value: str | Path) -> Path:
    """`value` as a local folder; an object-store URL is refused in one line instead of being read as a
    local folder named `s3:`."""
    if URL_RE.match(str(value)):
        raise StudioError(f"{setting}={value}: object-store URLs are not supported by this version; "
                          f"use a local folder (a bucket mounted with a FUSE driver works)")
    return Path(value)


def drops_root(drops_dir: str | Path) -> Path:
    """DROPS_DIR, which must be an existing folder: a typo must not look like an empty library."""
    root = local_folder("DROPS_DIR", drops_dir)
    if not root.exists():
        raise StudioError(f"DROPS_DIR={drops_dir}: no such folder")
    if not root.is_dir():
        raise StudioError(f"DROPS_DIR={drops_dir}: not a folder")
    return root


def discover_drops(drops_dir: str | Path) -> DropListing:
    """Every visible sub-folder of `drops_dir` is a drop; badly named ones are listed apart."""
    root = drops_root(drops_dir)
    listing = DropListing([])
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if DROP_NAME_RE.fullmatch(entry.name):
            listing.drops.append(ProductDrop(entry.name, entry))
        else:
            listing.invalid.append(entry.name)
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


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """Open a product image as it looks to a person: EXIF orientation applied,
    first frame of animations, transparency composited on white, 8-bit RGB.

    With `min_side`, JPEGs are decoded at a reduced scale that still keeps both sides
    at least that long (DCT scaling): several times faster for large photos that are
    about to be shrunk to CLIP's 224 pixels anyway."""
    with Image.open(path) as im:
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


def _iter_candidate_files(folder: Path):
    """Yield (relative posix path, absolute path) of files with an image extension.

    Hidden files and folders and files of other types are skipped silently; a
    symbolic link is yielded as such so the caller can reject it when it leaves
    the drop folder.
    """
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            yield full.relative_to(folder).as_posix(), full


def _inspect(folder: Path, rel: str, full: Path, max_pixels: int) -> dict:
    """Hash and fully decode one file; returns a manifest row or {"file", "reason"}."""
    try:
        if full.is_symlink():
            target = full.resolve()
            if not target.is_relative_to(folder.resolve()):
                return {"file": rel, "reason": "symbolic link leaves the drop folder"}
        st = full.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device named *.png must not block the scan
            return {"file": rel, "reason": "not a regular file"}
        if st.st_size == 0:
            return {"file": rel, "reason": "empty file"}
        data = full.read_bytes()
    except OSError as e:
        return {"file": rel, "reason": f"unreadable: {e.strerror or e}"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(full) as im:
                w, h, fmt = im.width, im.height, im.format
                if w * h > max_pixels:
                    return {"file": rel, "reason": f"{w}x{h} pixels is over the limit of {max_pixels} pixels"}
                im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return {"file": rel, "reason": f"decompression bomb: {e}"}
    except Image.UnidentifiedImageError:
        return {"file": rel, "reason": "not an image"}
    except (OSError, SyntaxError, ValueError) as e:
        return {"file": rel, "reason": f"cannot decode: {e}"}
    return {
        "path": rel,
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": int(w),
        "height": int(h),
        "format": str(fmt),
        "bytes": int(st.st_size),
        "mtime_ns": int(st.st_mtime_ns),
    }


def scan_drop(
    drop: ProductDrop,
    previous: pd.DataFrame | None = None,
    max_pixels: int = DEFAULTS["MAX_IMAGE_PIXELS"],
    threads: int = 4,
) -> Manifest:
    """Build the manifest of a drop.

    Files whose size and modification time match `previous` keep their row
    without being read again, so re-scanning an unchanged drop is cheap.
    """
    if not drop.folder.is_dir():
        raise FileNotFoundError(f"drop folder not found: {drop.folder}")
    known: dict[str, dict] = {}
    if previous is not None and len(previous):
        known = {r["path"]: r for r in previous.to_dict("records")}

    rows: list[dict] = []
    rejected: list[dict] = []
    todo: list[tuple[str, Path]] = []
    for rel, full in _iter_candidate_files(drop.folder):
        old = known.get(rel)
        if old is not None and not full.is_symlink():
            try:
                st = full.stat()
            except OSError:
                st = None
            if st and st.st_size == old["bytes"] and st.st_mtime_ns == old["mtime_ns"]:
                rows.append({k: old[k] for k in MANIFEST_COLUMNS})
                continue
        todo.append((rel, full))

    # PIL releases the GIL while decoding, so threads give real parallelism here.
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for result in pool.map(lambda t: _inspect(drop.folder, t[0], t[1], max_pixels), todo):
            (rejected if "reason" in result else rows).append(result)

    images = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("path").reset_index(drop=True)
    return Manifest(images=images, rejected=sorted(rejected, key=lambda r: r["file"]))


def drop_fingerprint(drop: ProductDrop) -> str:
    """A cheap fingerprint of a drop's content: names, sizes and modification times of its
    image files and of briefs.yaml. Any add, replace or remove changes it; reading the bytes
    of every file on every sensor tick would not scale to large libraries."""
    h = hashlib.sha256()
    entries = list(_iter_candidate_files(drop.folder))
    if drop.briefs_file.exists():
        entries.append((drop.briefs_file.name, drop.briefs_file))
    for rel, full in entries:
        try:
            st = full.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{rel}\0unreadable\n".encode())
    return h.hexdigest()[:32]
