"""Publishing: a drop's approved campaign images, copied to `<PUBLISH_DIR>/<drop>/` with a manifest that
says where each came from, for the people and systems that use them.

`manifest.json` and `manifest.csv` hold one row per published image: the image and its content hash, its
brief and prompt, the model, size and cost, the references it was made from (with their content hashes and,
where the catalog gives them, SKUs), the base image, the parent image and note of a revision, and who
approved it when. A brief that names channels also gets a rendition per channel (publishing.py), each a row
with its channel, pixels, bytes, whether it is signed, and the image it was cut from; a rendition a reviewer
rejected on its own is left out. An image approved no longer (rejected, cleared, or gone with its brief) is
removed from the publish location, and so is a rejected rendition; everything else there is left as it is.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import pandas as pd

from ...domain import listing, storage
from ...domain.artifacts import DropArtifacts, read_json
from ...domain.record import inputs_key
from ...domain.reviews import Decision, Reviews, current, image_stem, images_only
from ...domain.storage import AnyPath, write_atomic
from ..campaigns.logic import campaign_dir
from ..campaigns.outputs import CampaignOutputs, png_problem
from ..campaigns.scores import summary
from .publishing import RENDITION_COLUMNS, previous_rows, publish_renditions

FILES = ()  # nothing under the drop's artifacts: it reads reviews/ (domain/reviews.py) and writes PUBLISH_DIR
COLUMNS = ["image", "sha256", "drop", "brief", "prompt", "model", "size", "aspect_ratio", "cost_usd",
           "references", "base_image", "parent", "note", "reviewer", "approved_at"]
SCORE_COLUMNS = ["weakest_product", "product_fidelity", "prompt_match"]  # when the image was scored


@dataclass
class PublishReport:
    rows: list[dict] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    approved_missing: list[str] = field(default_factory=list)  # approved, but the image is gone
    refused: list[str] = field(default_factory=list)  # renditions not published, each with why
    held: list[str] = field(default_factory=list)  # renditions a reviewer rejected (the image stays approved)
    flagged: list[str] = field(default_factory=list)  # approved, kept back by PUBLISH_REQUIRES_SCORES, with why
    unsigned: bool = False  # renditions were published without a C2PA signature (no certificate configured)
    decisions: dict[str, Decision] = field(default_factory=dict)  # on whole images
    on_channels: dict[str, Decision] = field(default_factory=dict)  # on one channel's rendition
    folder: str = ""

    @property
    def key(self) -> str:
        return inputs_key(published=[(r["image"], r["sha256"], r["reviewer"], r["approved_at"]) for r in self.rows])


def manifest_row(drop: str, stem: str, sidecar: dict, sha256: str, decision: Decision) -> dict:
    brief = sidecar.get("brief", {})
    revision = sidecar.get("revision") or {}
    return {
        "image": f"{stem}.png", "sha256": sha256, "drop": drop, "brief": brief.get("id", ""),
        "prompt": brief.get("prompt", ""), "model": sidecar.get("model") or sidecar.get("generator", ""),
        "size": sidecar.get("image_size") or brief.get("image_size", ""), "aspect_ratio": brief.get("aspect_ratio") or "",
        "cost_usd": sidecar.get("estimated_cost_usd") or 0.0,
        "references": [{"path": r.get("path"), "sha256": r.get("sha256"), "sku": r.get("sku") or ""}
                       for r in sidecar.get("references", [])],
        "base_image": sidecar.get("base_image") or "", "parent": revision.get("parent", ""),
        "note": revision.get("note", ""), "reviewer": decision.reviewer, "approved_at": decision.time,
    }


def manifest_csv(rows: list[dict]) -> bytes:
    """The manifest as CSV: references as a JSON list in their column; the renditions' columns only when
    there are renditions (a drop without channels keeps the manifest it had)."""
    columns = COLUMNS + [c for c in SCORE_COLUMNS if any(c in r for r in rows)]
    columns += RENDITION_COLUMNS if any("channel" in r for r in rows) else []
    frame = pd.DataFrame([{**r, "references": json.dumps(r["references"])} for r in rows], columns=columns)
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode()


def score_fields(scores: dict | None) -> dict:
    """An image's scores as its manifest row gives them (stages/campaigns/scores.py)."""
    return {k: v for k, v in summary(scores).items() if k in SCORE_COLUMNS} if scores else {}


def publish_selects(drop: str, art: DropArtifacts, publish_root: AnyPath, channels: dict | None = None,
                    load_signer=lambda: None, read_ingredient=lambda ingredient: None,
                    scores: dict[str, dict] | None = None, flagged: dict[str, list[str]] | None = None,
                    requires_scores: bool = False) -> PublishReport:
    """Bring `<publish_root>/<drop>/` in line with the drop's approved images (copied only when their
    content changed), their renditions (for briefs that name channels), and write its manifests.
    `load_signer()`: the brand's C2PA signer or None, asked only when there are renditions, before anything
    is written (a bad certificate fails here). `scores`/`flagged`: each image's scores and why it is
    flagged; with `requires_scores` a flagged image is not published, even when approved."""
    folder = publish_root / drop
    report = PublishReport(folder=str(folder))
    standing = current(Reviews(art).history())
    report.decisions = images_only(standing)
    report.on_channels = on_channels = {k: d for k, d in standing.items() if d.channel}
    outputs = CampaignOutputs(campaign_dir(art))
    previous = previous_rows(folder)
    present = {e.rel for e in listing.list_files(folder)}
    approved = []
    for image, decision in sorted(report.decisions.items()):
        if decision.decision != "approve":
            continue
        stem = image_stem(image)
        try:
            data = storage.read_bytes(outputs.png(stem))
        except FileNotFoundError:
            data = b""
        if png_problem(data) is not None:
            report.approved_missing.append(image)
            continue
        if requires_scores and (flagged or {}).get(image):
            report.flagged.append(f"{stem}.png: {'; '.join(flagged[image])}")
            continue
        approved.append((stem, data, decision, read_json(outputs.sidecar(stem), {}) or {}))
    with_channels = any(sidecar.get("brief", {}).get("channels") for *_, sidecar in approved)
    signer = load_signer() if with_channels else None
    report.unsigned = with_channels and signer is None
    for stem, data, decision, sidecar in approved:
        sha = hashlib.sha256(data).hexdigest()
        name = f"{stem}.png"
        if previous.get(name, {}).get("sha256") == sha and name in present:
            report.unchanged.append(name)
        else:
            write_atomic(folder / name, data)
            report.copied.append(name)
        row = {**manifest_row(drop, stem, sidecar, sha, decision), **score_fields((scores or {}).get(f"campaign/{stem}.png"))}
        report.rows.append(row)
        if sidecar.get("brief", {}).get("channels"):
            publish_renditions(drop, stem, data, sidecar, decision, row, channels or {}, outputs, folder, previous,
                               present, signer, read_ingredient, report, on_channels)
    published = {r["image"] for r in report.rows}
    for name in sorted(set(previous) - published):  # only what an earlier run published
        if name in present:
            storage.remove(folder / name)
            report.removed.append(name)
    if report.rows or previous or "manifest.json" in present:  # a drop never approved from leaves no folder
        write_atomic(folder / "manifest.json", json.dumps(report.rows, indent=2, ensure_ascii=False).encode())
        write_atomic(folder / "manifest.csv", manifest_csv(report.rows))
    return report
