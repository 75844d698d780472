"""What is sent to the image model for each image, and its key: the same key is the same billed request
(and a refusal to it stays a refusal). An image whose sidecar records the same request under another key is
kept, so a change of key bills nothing (an earlier release's keys: domain/upgrade.py)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field


from ...domain import storage
from ...domain.artifacts import digest
from .generation import Edit, Reference
from ...domain.storage import AnyPath
from ..briefs.logic import Brief


# Failures worth asking again on the next run; anything else is the model's answer to these inputs.
TRANSIENT_FAILURES = ("HTTP_", "TIMEOUT", "CONNECTION_ERROR", "BATCH_")


def variant_stem(brief_id: str, variant: int) -> str:
    """The file stem of a brief's n-th image: `<brief>` for the first, `<brief>.v<n>` after."""
    return brief_id if variant == 1 else f"{brief_id}.v{variant}"


def variant_number(brief_id: str, stem: str) -> int | None:
    """n for `<brief_id>.v<n>` (None for the brief's first image or another brief's)."""
    m = re.fullmatch(rf"{re.escape(brief_id)}\.v(\d+)", stem)
    return int(m.group(1)) if m else None


def image_path(stem: str) -> str:
    """How the API, the reviews and the manifests name a campaign image: relative to the drop's artifacts."""
    return f"campaign/{stem}.png"


@dataclass(frozen=True)
class Revision:
    """A person's request to change one campaign image: the image (`campaign/<stem>.png`), their note, which
    is the model's edit instruction, and who asked."""

    parent: str
    note: str
    reviewer: str = ""


def base_instruction(brief: Brief) -> str:
    return (f"Change this photo (the first image) so that: {brief.prompt}. Put in the products shown in the "
            f"other images; keep the person, the pose and the framing of the photo.")


def revision_instruction(brief: Brief, note: str) -> str:
    return (f"Edit the first image: {note}. Keep everything else as it is, and the products as the other "
            f"images show them. The image was made for: {brief.prompt}")


def image_request(brief: Brief, model: str, reference_hashes: list[str], max_references: int | None,
                  base_sha256: str | None = None, edit_of: tuple[str, str] | None = None) -> dict:
    """What is sent for one image of `brief`: the model (or the offline board), the prompt, the image
    settings and the content hashes of the references that go with it, in order (a model takes at most
    `max_references` images). A base image (its hash) or the image being revised and the note (`edit_of`)
    go first and take one of those places; a brief with neither is asked for as before they existed."""
    edits = base_sha256 is not None or edit_of is not None
    places = max_references - 1 if edits and max_references is not None else max_references
    request = {"model": model, "prompt": brief.prompt, "aspect_ratio": brief.aspect_ratio,
               "image_size": brief.image_size, "references": reference_hashes[:places]}
    if base_sha256 is not None:
        request["base_image"] = base_sha256
    if edit_of is not None:
        request["edit"], request["instruction"] = edit_of
    return request


def request_key(request: dict) -> str:
    return digest(request, 64)


def file_sha256(path: AnyPath) -> str:
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()


RATIOS_DIR = "ratios"  # campaign/ratios/<stem>@<w>x<h>.png: a variant at another ratio (not reviewed on its own)


def ratio_stem(stem: str, ratio: str) -> str:
    return f"{RATIOS_DIR}/{stem}@{ratio.replace(':', 'x')}"


@dataclass
class ImageRequest:
    """One image a brief needs: its variant, references, the request sent for it and its key."""

    brief: Brief
    variant: int
    references: list[dict]  # [{path, score, sha256, via, sku, name}]
    request: dict  # image_request(...)
    edit: Edit | None = None  # the image the model changes (a base image, or the image revised)
    provenance: dict = field(default_factory=dict)  # sidecar facts: {"base_image": ...} or {"revision": ...}
    ratio: str | None = None  # another aspect ratio of the variant, that channels' renditions are cut from

    @property
    def key(self) -> str:
        return request_key(self.request)

    @property
    def stem(self) -> str:
        stem = variant_stem(self.brief.id, self.variant)
        return stem if self.ratio is None else ratio_stem(stem, self.ratio)

    @property
    def job_key(self) -> str:
        """The request's key within a batch job, where the variants of one brief are the same request."""
        return f"{self.stem}:{self.key}"

    def made(self, sidecar: dict) -> str | None:
        """How a sidecar's image matches this request: "key", or "request" (recorded, under another key);
        None when it was made from another one."""
        if sidecar.get("cache_key") == self.key:
            return "key"
        if sidecar.get("request") == self.request:
            return "request"
        return None


def reference_paths(drop_folder: AnyPath, req: ImageRequest) -> list[Reference]:
    return [Reference(drop_folder / r["path"], r["score"], r.get("sku") or "") for r in req.references]
