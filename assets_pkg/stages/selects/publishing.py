"""An approved image's renditions, one per channel its brief names: cut from the variant's image nearest the
channel's ratio, encoded under the channel's limit, labelled (XMP) and signed (C2PA), written beside the PNG
as `<stem>.<channel>.jpg`. A rendition whose inputs are those of the one published is not cut, encoded or
signed again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
from dataclasses import dataclass

from PIL import Image

from ...domain import listing, storage
from ...domain.artifacts import digest, read_json
from ...domain.channels import Channel, ratio_value
from ...domain.reviews import Decision, subject
from ...domain.storage import AnyPath, write_atomic
from ..campaigns.outputs import CampaignOutputs
from ..campaigns.requests import RATIOS_DIR
from .provenance import BrandSigner, Provenance, write_xmp
from .renditions import RenditionRefused, cut, encode, qualities

RENDITION_VERSION = 2  # what a rendition's key includes of the code that makes it: raise it when that changes
RENDITION_COLUMNS = ["channel", "width", "height", "bytes", "signed", "source", "source_sha256", "upscaled",
                     "quality", "key"]


@dataclass
class Source:
    path: str  # campaign/<stem>.png or campaign/ratios/<stem>@4x5.png
    ratio: float
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @functools.cached_property
    def image(self) -> Image.Image:
        """Decoded once, for every channel cut from it."""
        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image


def sources(outputs: CampaignOutputs, stem: str, data: bytes, sidecar: dict) -> list[Source]:
    """The variant's images a rendition may be cut from: the approved one, and the same variant made at the
    other ratios its channels need (campaign/ratios/)."""
    with Image.open(io.BytesIO(data)) as im:
        found = [Source(f"campaign/{stem}.png", im.width / im.height, data)]
    if sidecar.get("revision"):
        return found  # a revision was made at its own ratio only
    prefix = f"{RATIOS_DIR}/{stem}@"
    for entry in listing.list_files(outputs.folder / RATIOS_DIR):
        rel = f"{RATIOS_DIR}/{entry.rel}"
        if rel.startswith(prefix) and rel.endswith(".png"):
            w, _, h = rel[len(prefix):-4].partition("x")
            found.append(Source(f"campaign/{rel}", ratio_value(f"{w}:{h}"), storage.read_bytes(entry.path)))
    return found


def nearest(found: list[Source], channel: Channel) -> Source:
    return min(found, key=lambda s: abs(math.log(s.ratio / channel.ratio)))


def provenance(drop: str, stem: str, sidecar: dict, channel: Channel, decision: Decision) -> Provenance:
    brief = sidecar.get("brief", {})
    refs = sidecar.get("references", [])
    ingredients = [{"title": r["path"].rsplit("/", 1)[-1], "sha256": r["sha256"], "path": r["path"],
                    "relationship": "inputTo"} for r in refs if r.get("sha256")]
    if sidecar.get("base_image_sha256"):
        ingredients.insert(0, {"title": sidecar["base_image"].rsplit("/", 1)[-1], "sha256": sidecar["base_image_sha256"],
                               "path": sidecar["base_image"], "relationship": "parentOf"})
    return Provenance(
        title=f"{drop} {stem} ({channel.name})", brief=brief.get("id", ""), prompt=brief.get("prompt", ""),
        skus=sorted({r["sku"] for r in refs if r.get("sku")}), model=sidecar.get("model") or sidecar.get("generator", ""),
        edited=bool(sidecar.get("base_image") or sidecar.get("revision")), channel=channel.name,
        reviewer=decision.reviewer, approved_at=decision.time, ingredients=ingredients,
        photograph=bool(sidecar.get("base_image")))


def rendition_key(source: Source, channel: Channel, focus: str, facts: Provenance, signer: BrandSigner | None) -> str:
    """Exactly what a published rendition depends on."""
    return digest({"v": RENDITION_VERSION, "source": source.sha256, "channel": [channel.name, channel.to_dict()],
                   "focus": focus, "facts": facts.__dict__, "signer": signer.fingerprint if signer else None})


def make_rendition(source: Source, channel: Channel, focus: str, facts: Provenance, signer: BrandSigner | None,
                   read_ingredient) -> tuple[bytes, dict]:
    """The published bytes and their facts. Each quality is tried, best first, until the labelled and signed
    file fits the channel's limit (the metadata counts too); refused when none does."""
    shaped = cut(source.image, channel, focus)
    ingredients = {i["sha256"]: read_ingredient(i) for i in facts.ingredients} if signer else {}
    for quality in qualities(channel):
        data = write_xmp(encode(shaped.image, channel, quality), facts)
        if signer is not None:
            data = signer.sign(data, channel.format, facts, {k: v for k, v in ingredients.items() if v is not None})
        if channel.max_bytes is None or len(data) <= channel.max_bytes:
            return data, {"width": channel.width, "height": channel.height, "bytes": len(data),
                          "upscaled": shaped.upscaled, "quality": quality, "signed": signer is not None}
    raise RenditionRefused(f"{channel.name}: {len(data) / 1024:.0f} KB at the lowest quality, over its limit of "
                           f"{channel.max_bytes / 1024:.0f} KB")


def publish_renditions(drop: str, stem: str, data: bytes, sidecar: dict, decision: Decision, row: dict,
                       channels: dict[str, Channel], outputs: CampaignOutputs, folder: AnyPath,
                       previous: dict[str, dict], present: set[str], signer: BrandSigner | None,
                       read_ingredient, report, on_channels: dict[str, Decision]) -> None:
    """Bring the image's renditions in `folder` in line: each channel's file and manifest row, but for those
    `on_channels` (a subject's standing decision) rejects."""
    brief = sidecar.get("brief", {})
    focus = brief.get("focus") or "center"
    found = None
    for name in brief.get("channels") or []:
        channel = channels.get(name)
        if channel is None:
            report.refused.append(f"{stem}.{name}: no channel {name!r} (channels.yaml changed since the brief)")
            continue
        said = on_channels.get(subject(f"campaign/{stem}.png", name))
        if said is not None and said.decision == "reject":
            report.held.append(f"{stem}.{name}: rejected by {said.reviewer}" + (f": {said.note}" if said.note else ""))
            continue
        found = found or sources(outputs, stem, data, sidecar)
        source = nearest(found, channel)
        facts = provenance(drop, stem, sidecar, channel, decision)
        key = rendition_key(source, channel, focus, facts, signer)
        file = f"{stem}.{channel.name}.{channel.extension}"
        old = previous.get(file)
        if old and old.get("key") == key and file in present:
            report.rows.append(old)
            report.unchanged.append(file)
            continue
        try:
            published, made = make_rendition(source, channel, focus, facts, signer, read_ingredient)
        except RenditionRefused as e:
            report.refused.append(f"{stem}.{e}")
            continue
        write_atomic(folder / file, published)
        report.copied.append(file)
        report.rows.append({**row, "image": file, "sha256": hashlib.sha256(published).hexdigest(), "channel": channel.name,
                            **made, "source": source.path, "source_sha256": source.sha256, "key": key})


def preview(outputs: CampaignOutputs, stem: str, sidecar: dict, channel: Channel, side: int) -> bytes:
    """A JPEG of `channel`'s rendition of the image as publishing will cut it, `side` px on its long side
    (what a reviewer judges a crop by). RenditionRefused when it would be refused."""
    source = nearest(sources(outputs, stem, storage.read_bytes(outputs.png(stem)), sidecar), channel)
    shaped = cut(source.image, channel, sidecar.get("brief", {}).get("focus") or "center").image.convert("RGB")
    shaped.thumbnail((side, side), Image.LANCZOS)
    buf = io.BytesIO()
    shaped.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def reader_of(drop_folder: AnyPath, shared_base_images: AnyPath | None):
    """Reads an ingredient's bytes (a reference picture of the drop, or a base image) for its C2PA record;
    None when it is gone or no longer the bytes the image was made from."""

    def read(ingredient: dict) -> bytes | None:
        for root in (drop_folder, shared_base_images):
            if root is None:
                continue
            try:
                raw = storage.read_bytes(root / ingredient["path"])
            except FileNotFoundError:
                continue
            if hashlib.sha256(raw).hexdigest() == ingredient["sha256"]:
                return raw
        return None

    return read


def previous_rows(folder: AnyPath) -> dict[str, dict]:
    return {r["image"]: r for r in read_json(folder / "manifest.json", []) or []}
