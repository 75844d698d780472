"""The files each image leaves: `campaign/<brief>.png` (`<brief>.v<n>.png` for variant n > 1) and its JSON sidecar
(the request, the model's answer, a refusal), and the report of a run over them."""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from PIL import Image

from ...domain import listing, storage, upgrade
from ...domain.artifacts import DropArtifacts, read_json, write_json
from ...domain.errors import GeneratorError
from .generation import Edit, Generation
from ...domain.record import inputs_key
from ...domain.storage import AnyPath, write_atomic
from ..briefs.logic import Brief, base_image_path
from .requests import (RATIOS_DIR, TRANSIENT_FAILURES, ImageRequest, Revision, base_instruction, file_sha256, image_path,
                       image_request, request_key, revision_instruction, variant_number,
                       variant_stem)


def png_problem(data: bytes) -> str | None:
    """None when the bytes are an image that decodes and is not empty, else what is wrong with it."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.width == 0 or im.height == 0:
                return "empty image"
    except Exception as e:  # any decoder complaint means a broken file
        return str(e) or type(e).__name__
    return None


def png_decodes(path: AnyPath) -> str | None:
    """None when the PNG decodes and is not empty, else what is wrong with it."""
    try:
        return png_problem(storage.read_bytes(path))
    except FileNotFoundError:
        return "missing"


@dataclass
class CampaignReport:
    generated: list[str] = field(default_factory=list)  # PNG paths, kept or new
    blocked: list[dict] = field(default_factory=list)  # [{brief, variant, reason, text}]
    cached: int = 0
    requests: int = 0  # images asked of the generator in this run
    pending: int = 0  # images waiting in a batch job
    usage: dict = field(default_factory=dict)
    estimated_cost_usd: float = 0.0
    per_brief_cost_usd: dict = field(default_factory=dict)
    briefs: int = 0
    adopted: int = 0  # kept images whose sidecar moved to the current key (same request, nothing billed)
    batch_job: str | None = None  # the Batch API job the drop waits on (GEMINI_MODE=batch)
    removed_stale: list[str] = field(default_factory=list)
    request_keys: dict[str, str] = field(default_factory=dict)  # image stem -> the key of its request
    revision: str | None = None  # a revision run: the revised image (campaign/<stem>.png), new or already made
    waiting: int = 0  # a revision run: images of changed briefs it left to the next full run

    @property
    def key(self) -> str:
        """What the campaign index depends on: the request behind each image, and which images exist."""
        return inputs_key(requests=self.request_keys, images=sorted(g.rsplit("/", 1)[-1] for g in self.generated))

    def spend(self, req: "ImageRequest", cost: float | None) -> None:
        self.estimated_cost_usd = round(self.estimated_cost_usd + (cost or 0.0), 6)
        self.per_brief_cost_usd[req.brief.id] = round(self.per_brief_cost_usd.get(req.brief.id, 0.0) + (cost or 0.0), 6)


class _LazySidecars(Mapping):
    """stem -> sidecar for the stems one listing found, each read the first time it is asked for."""

    def __init__(self, outputs: "CampaignOutputs", stems: list[str]):
        self._outputs = outputs
        self._read: dict[str, dict | None] = dict.fromkeys(stems)

    def __getitem__(self, stem: str) -> dict:
        if self._read[stem] is None:
            self._read[stem] = read_json(self._outputs.sidecar(stem), {}) or {}
        return self._read[stem]

    def __iter__(self):
        return iter(self._read)

    def __len__(self) -> int:
        return len(self._read)


class CampaignOutputs:
    """The campaign folder of one drop."""

    def __init__(self, folder: AnyPath):
        self.folder = folder

    def png(self, stem: str) -> AnyPath:
        return self.folder / f"{stem}.png"

    def sidecar(self, stem: str) -> AnyPath:
        return self.folder / f"{stem}.json"

    def _sidecars(self) -> Mapping[str, dict]:
        """stem -> sidecar, from one listing of the folder (read as needed)."""
        stems = [e.rel[:-5] for e in listing.list_files(self.folder) if e.rel.endswith(".json") and "/" not in e.rel]
        return _LazySidecars(self, stems)

    def revisions(self, brief_id: str, sidecars: Mapping[str, dict]) -> dict[int, dict]:
        """variant number -> sidecar, for the brief's images that are revisions of another."""
        found = {}
        for stem in sidecars:
            n = variant_number(brief_id, stem)
            if n is not None and sidecars[stem].get("revision"):
                found[n] = sidecars[stem]
        return found

    def plan(self, briefs: Sequence[Brief], refs: dict[str, list[dict]], generator: str, model: str | None,
             force: bool, report: CampaignReport, log: Callable[[str], None] = lambda m: None,
             max_references: int | None = None, drop_folder: AnyPath | None = None,
             shared_base_images: str | None = None,
             shapes: Callable[[Brief], list[tuple[Brief, str | None]]] = lambda b: [(b, None)]) -> list[ImageRequest]:
        """The images to ask for; kept images and kept refusals go into `report`. `shapes(brief)`: the brief
        as asked for its own image, then at each other aspect ratio its channels need (logic.brief_shapes). A kept image made under
        another key from the same request has its sidecar moved to the current key (nothing is billed).
        Revisions are kept as they are (made from an image, not from the brief alone, they are never asked
        for again); a brief's own variants take the numbers revisions do not hold."""
        todo = []
        sidecars = self._sidecars()
        # Once per drop: images an earlier release made under its keys for the same inputs are kept.
        from_previous_release = upgrade.pending(DropArtifacts(self.folder.parent), "campaigns")
        for brief in briefs:
            brief_refs = refs.get(brief.id, [])
            if any("sha256" not in r for r in brief_refs):
                raise GeneratorError(f"brief {brief.id!r}: its references were searched by an older Drop Studio "
                                     f"(no content hashes); materialize reference_images first")
            hashes = [r["sha256"] for r in brief_refs]
            edit, base_sha, provenance = None, None, {}
            if brief.base_image:
                path = base_image_path(brief, drop_folder, shared_base_images) if drop_folder is not None else None
                if path is None:
                    raise GeneratorError(f"brief {brief.id!r}: base_image {brief.base_image!r} is gone; "
                                         f"materialize campaign_briefs to check the briefs again")
                base_sha, edit = file_sha256(path), Edit(path, base_instruction(brief))
                provenance = {"base_image": brief.base_image, "base_image_sha256": base_sha}
            revisions = self.revisions(brief.id, sidecars)
            numbers = itertools.islice((n for n in itertools.count(1) if n not in revisions), brief.variants)
            for variant in numbers:
                for asked, ratio in shapes(brief):  # the brief's image, and one per other ratio its channels need
                    req = ImageRequest(asked, variant, brief_refs,
                                       image_request(asked, model or generator, hashes, max_references, base_sha),
                                       edit, provenance, ratio=ratio)
                    report.request_keys[req.stem] = req.key
                    previous = sidecars.get(req.stem) if ratio is None else read_json(self.sidecar(req.stem), {})
                    previous = previous or {}
                    how = None if force else req.made(previous)
                    if how is None and not force and previous and from_previous_release and ratio is None and \
                            previous.get("cache_key") == upgrade.previous_generation_key(brief, generator, model,
                                                                                         hashes, variant):
                        how = "previous release"
                    if how is None or not self._kept(req, previous, how, report, log):
                        todo.append(req)
            for variant, sidecar in sorted(revisions.items()):
                stem = variant_stem(brief.id, variant)
                if png_decodes(self.png(stem)) is None:
                    report.request_keys[stem] = sidecar.get("cache_key", "")
                    report.generated.append(str(self.png(stem)))
                    report.cached += 1
        return todo

    def _kept(self, req: ImageRequest, previous: dict, how: str, report: CampaignReport, log) -> bool:
        """Whether the image (or refusal) `previous` records for this same request is kept, not asked again."""
        if png_decodes(self.png(req.stem)) is None:
            if how != "key":
                write_json(self.sidecar(req.stem), {**previous, "cache_key": req.key, "request": req.request})
                report.adopted += 1
            report.generated.append(str(self.png(req.stem)))
            report.cached += 1
            log(f"{req.stem}: request unchanged, keeping {self.png(req.stem).name} (force regenerates)")
            return True
        refused = previous.get("blocked_reason")
        if refused and not refused.startswith(TRANSIENT_FAILURES):
            # The model refused these exact inputs; asking again would bill again for the same answer.
            report.blocked.append({"brief": req.brief.id, "variant": req.variant, "reason": refused,
                                   "text": previous.get("text", "")[:200]})
            report.cached += 1
            return True
        return False

    def revise(self, revision: Revision, briefs: Sequence[Brief], refs: dict[str, list[dict]], generator: str,
               model: str | None, report: CampaignReport, max_references: int | None = None) -> ImageRequest | None:
        """The request that revises `revision.parent` with its note, or None when that same revision (same
        image, same note, same model) was made already: `report.revision` names the image either way."""
        stem = revision.parent.removeprefix("campaign/").removesuffix(".png")
        parent = read_json(self.sidecar(stem), {})
        if not revision.parent.startswith("campaign/") or png_decodes(self.png(stem)) is not None or not parent:
            raise GeneratorError(f"path: {revision.parent!r} is not a campaign image of this drop")
        brief_id = parent.get("brief", {}).get("id")
        brief = next((b for b in briefs if b.id == brief_id), None)
        if brief is None:
            raise GeneratorError(f"path: {revision.parent!r} was made for brief {brief_id!r}, no longer in briefs.yaml")
        brief_refs = refs.get(brief.id, [])
        parent_sha = file_sha256(self.png(stem))
        request = image_request(brief, model or generator, [r["sha256"] for r in brief_refs], max_references,
                                edit_of=(parent_sha, revision.note))
        sidecars = self._sidecars()
        key = request_key(request)
        used = {other: variant_number(brief.id, other) for other in sidecars}
        for other, n in used.items():
            if n is not None and sidecars[other].get("cache_key") == key and png_decodes(self.png(other)) is None:
                report.revision = image_path(other)
                return None
        variant = max([brief.variants, *(n for n in used.values() if n is not None)]) + 1
        provenance = {"revision": {"parent": revision.parent, "parent_sha256": parent_sha, "note": revision.note,
                                   "reviewer": revision.reviewer}}
        req = ImageRequest(brief, variant, brief_refs, request,
                           Edit(self.png(stem), revision_instruction(brief, revision.note)), provenance)
        report.revision = image_path(req.stem)
        report.request_keys[req.stem] = req.key
        return req

    def record(self, req: ImageRequest, result: Generation, drop: str, mode: str, cost: float | None,
               seconds: float | None, report: CampaignReport, log: Callable[[str], None] = lambda m: None,
               spent_now: bool = True) -> None:
        """Write one outcome: the PNG (or remove a stale one) and its sidecar. `spent_now` is False for a
        batch result, whose cost the run that submitted the job already counted."""
        png = self.png(req.stem)
        if result.png is None:
            report.blocked.append({"brief": req.brief.id, "variant": req.variant, "reason": result.blocked_reason,
                                   "text": result.text[:200]})
            log(f"{req.stem}: no image ({result.blocked_reason}) {result.text[:200]}")
            storage.remove(png)
        else:
            write_atomic(png, result.png)
            report.generated.append(str(png))
        write_json(self.sidecar(req.stem), {
            "brief": req.brief.to_dict(), "variant": req.variant, "drop": drop,
            "references": [{k: r.get(k) for k in ("path", "score", "sha256", "via", "sku", "name")}
                           for r in req.references],
            "request": req.request,
            "generator": result.generator, "model": result.model, "mode": mode,
            "image_size": req.brief.image_size, "finish_reason": result.finish_reason,
            "blocked_reason": result.blocked_reason, "text": result.text, "usage": result.usage,
            "estimated_cost_usd": cost, "seconds": seconds, "cache_key": req.key, **req.provenance,
        })
        for k, v in result.usage.items():
            if isinstance(v, (int, float)):
                report.usage[k] = report.usage.get(k, 0) + v
        if spent_now:
            report.spend(req, cost)

    def remove_stale(self, wanted: Iterable[str]) -> list[str]:
        """Outputs of briefs (or variants) no longer in briefs.yaml, and revisions whose image is gone:
        every file but those of the `wanted` stems (kept, made, asked for, or refused)."""
        wanted = set(wanted)
        removed = []
        for entry in listing.list_files(self.folder):
            stem, dot, suffix = entry.rel.rpartition(".")
            ours = "/" not in entry.rel or entry.rel.startswith(RATIOS_DIR + "/")  # not the reviews', say
            if ours and dot and suffix in ("png", "json") and stem not in wanted:
                storage.remove(entry.path)
                removed.append(entry.rel)
        return removed
