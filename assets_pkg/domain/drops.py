"""Product drops on disk: naming, discovery, the files a drop folder holds, and reading its images.

A drop is a folder `<drops_dir>/<drop>/` of product images released together, on disk or under an
object-store prefix (see storage.py). Beside its images it may hold `briefs.yaml` (stages/briefs) and `products.csv` (stages/catalog).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from . import listing, storage
from .errors import InvalidDropName, StudioError
from .listing import Entry
from .storage import AnyPath

CATALOG_FILE = "products.csv"
BRIEFS_FILE = "briefs.yaml"

# Drop names become Dagster partition keys, Milvus filter values and folder
# names, so only a conservative character set is accepted.
DROP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})

# `version`: the file's modification time in ns, or an object's ETag; with the size, it tells whether a
# file must be read again.


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
        return self.folder / BRIEFS_FILE

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


def drop_fingerprints(drops_dir: str | Path) -> tuple[DropListing, dict[str, str]]:
    """The drops under `drops_dir` and each one's `drop_fingerprint`, from one listing of the whole tree (in a
    bucket: one request to check the prefix, then one per 1,000 objects)."""
    root = drops_root(drops_dir)
    tree = listing.list_tree(root)
    found = _drops_in(root, sorted(tree))
    return found, {d.name: drop_fingerprint(d, tree[d.name]) for d in found.drops}


def discover_drops(drops_dir: str | Path) -> DropListing:
    """Every visible sub-folder (or sub-prefix) of `drops_dir` is a drop; badly named ones are listed apart."""
    root = drops_root(drops_dir)
    return _drops_in(root, [name for name, is_folder in listing.list_folders(root) if is_folder])


def _drops_in(root: AnyPath, folders: list[str]) -> DropListing:
    listing = DropListing([])
    for name in folders:
        if DROP_NAME_RE.fullmatch(name):
            listing.drops.append(ProductDrop(name, root / name))
        else:
            listing.invalid.append(name)
    return listing


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


def image_entries(entries: list[Entry]) -> list[Entry]:
    """Files with an image extension; other types are skipped silently."""
    return [e for e in entries if Path(e.rel).suffix.lower() in IMAGE_EXTENSIONS]


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


def drop_fingerprint(drop: ProductDrop, entries: list[Entry] | None = None) -> str:
    """A cheap fingerprint of a drop's content from one listing (`entries`, else the drop folder's): names,
    sizes and versions (modification time, or an object's ETag) of its image files, briefs.yaml,
    products.csv and a store export (storefront/importer.py). Any add, replace or remove changes it, and nothing is downloaded: reading every file on
    every sensor tick would not scale to large libraries."""
    h = hashlib.sha256()
    entries = listing.list_files(drop.folder) if entries is None else entries
    from .storefront.importer import EXPORT_NAMES

    described = (drop.briefs_file.name, drop.catalog_file.name, *EXPORT_NAMES)
    for e in image_entries(entries) + [e for e in entries if e.rel in described]:
        h.update(f"{e.rel}\0{e.size}\0{e.version}\0{e.problem or ''}\n".encode())
    return h.hexdigest()[:32]
