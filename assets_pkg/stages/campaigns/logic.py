"""The campaign stage: which images a drop's briefs need, which are kept, what a run may spend, and the
files each image leaves (`<brief>.png`, or `<brief>.v<n>.png` for variant n > 1, each with a JSON sidecar).
Interactive and batch generation live together because they share these caching, refusal and spending
rules, which must be read together.

An image is keyed by exactly what is sent to the model (`image_request`: model, prompt, image settings, the
reference images that go with it, by content and in order): the same key means the same billed request, so
an unchanged request is never billed twice, and neither is a refusal the model gave to it. Each sidecar
records that request, and an image made under an older key is adopted when its request is the same, so a
change of key bills nothing.

Files: campaign/<brief>.png with its <brief>.json sidecar (<brief>.v2.png ... for variants), and
campaign-batch.json (the Batch API job the drop's images wait on, GEMINI_MODE=batch).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import re
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from PIL import Image

from ...domain import storage
from ...domain.artifacts import DropArtifacts, digest, read_json, write_json
from ...domain.drops import ProductDrop
from ...domain.errors import GeneratorError
from .generator import Edit, Generation, Reference
from ...domain.record import inputs_key
from ...domain.reviews import image_stem
from ...domain.storage import AnyPath, write_atomic
from ..briefs.logic import Brief, base_image_path, read_briefs
from ..references.logic import read_references

FILES = ("campaign/", "campaign-batch.json")

def campaign_dir(art: DropArtifacts) -> AnyPath:
    return art / "campaign"


def campaign_png_entries(art: DropArtifacts) -> list[storage.Entry]:
    """The generated PNGs as one listing shows them (size and version, nothing read)."""
    return [e for e in storage.list_files(campaign_dir(art)) if e.rel.endswith(".png") and "/" not in e.rel]


def campaign_pngs(art: DropArtifacts) -> list[AnyPath]:
    return [e.path for e in campaign_png_entries(art)]


def campaign_batch_path(art: DropArtifacts) -> AnyPath:
    """The Batch API job the drop's campaign images wait on (GEMINI_MODE=batch)."""
    return art / "campaign-batch.json"


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


def legacy_generation_key(brief: Brief, generator: str, model: str | None, reference_hashes: list[str],
                          variant: int) -> str | None:
    """The key the previous release gave an image (it hashed the whole brief); None for a brief that uses
    what that release did not have. An image whose sidecar holds it was made from this same request."""
    if brief.products or brief.where or brief.query is None or brief.base_image:
        return None
    old_brief = {k: getattr(brief, k) for k in ("id", "prompt", "query", "top_k", "aspect_ratio", "image_size")}
    payload = {"brief": old_brief, "generator": generator, "model": model, "references": reference_hashes,
               "variant": variant}
    return digest(payload, 64)


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
class ImageRequest:
    """One image a brief needs: its variant, references, the request sent for it and its key."""

    brief: Brief
    variant: int
    references: list[dict]  # [{path, score, sha256, via, sku, name}]
    request: dict  # image_request(...)
    legacy_key: str | None = None
    edit: Edit | None = None  # the image the model changes (a base image, or the image revised)
    provenance: dict = field(default_factory=dict)  # sidecar facts: {"base_image": ...} or {"revision": ...}

    @property
    def key(self) -> str:
        return request_key(self.request)

    @property
    def stem(self) -> str:
        return variant_stem(self.brief.id, self.variant)

    @property
    def job_key(self) -> str:
        """The request's key within a batch job, where the variants of one brief are the same request."""
        return f"{self.stem}:{self.key}"

    def made(self, sidecar: dict) -> str | None:
        """How a sidecar's image matches this request: "key", "request" (recorded, under another key) or
        "legacy" (the previous release's key of the same inputs); None when it was made from another one."""
        if sidecar.get("cache_key") == self.key:
            return "key"
        if sidecar.get("request") == self.request:
            return "request"
        if self.legacy_key is not None and sidecar.get("cache_key") == self.legacy_key:
            return "legacy"
        return None


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
        stems = [e.rel[:-5] for e in storage.list_files(self.folder) if e.rel.endswith(".json") and "/" not in e.rel]
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
             shared_base_images: str | None = None) -> list[ImageRequest]:
        """The images to ask for; kept images and kept refusals go into `report`. A kept image made under
        another key from the same request has its sidecar moved to the current key (nothing is billed).
        Revisions are kept as they are (made from an image, not from the brief alone, they are never asked
        for again); a brief's own variants take the numbers revisions do not hold."""
        todo = []
        sidecars = self._sidecars()
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
                req = ImageRequest(brief, variant, brief_refs,
                                   image_request(brief, model or generator, hashes, max_references, base_sha),
                                   legacy_generation_key(brief, generator, model, hashes, variant), edit, provenance)
                report.request_keys[req.stem] = req.key
                previous = sidecars.get(req.stem, {})
                how = None if force else req.made(previous)
                if how is not None:
                    if png_decodes(self.png(req.stem)) is None:
                        if how != "key":
                            write_json(self.sidecar(req.stem), {**previous, "cache_key": req.key,
                                                                "request": req.request})
                            report.adopted += 1
                        report.generated.append(str(self.png(req.stem)))
                        report.cached += 1
                        log(f"{req.stem}: request unchanged, keeping {self.png(req.stem).name} (force regenerates)")
                        continue
                    refused = previous.get("blocked_reason")
                    if refused and not refused.startswith(TRANSIENT_FAILURES):
                        # The model refused these exact inputs; asking again would bill again for the same answer.
                        report.blocked.append({"brief": brief.id, "variant": variant, "reason": refused,
                                               "text": previous.get("text", "")[:200]})
                        report.cached += 1
                        continue
                todo.append(req)
            for variant, sidecar in sorted(revisions.items()):
                stem = variant_stem(brief.id, variant)
                if png_decodes(self.png(stem)) is None:
                    report.request_keys[stem] = sidecar.get("cache_key", "")
                    report.generated.append(str(self.png(stem)))
                    report.cached += 1
        return todo

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
        req = ImageRequest(brief, variant, brief_refs, request, None,
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
        for entry in storage.list_files(self.folder):
            stem, dot, suffix = entry.rel.rpartition(".")
            if "/" not in entry.rel and dot and suffix in ("png", "json") and stem not in wanted:
                storage.remove(entry.path)
                removed.append(entry.rel)
        return removed


def estimate(requests: Sequence[ImageRequest], price: Callable[[str], float | None]) -> tuple[float, list[str]]:
    """(estimated USD for the requests, sizes the price table has no price for)."""
    total, unknown = 0.0, []
    for req in requests:
        usd = price(req.brief.image_size)
        if usd is None:
            unknown.append(req.brief.image_size)
        else:
            total += usd
    return round(total, 6), sorted(set(unknown))


def check_budget(requests: Sequence[ImageRequest], price: Callable[[str], float | None], cap: float | None,
                 model: str, mode: str) -> float:
    """The run's estimated spend; over the cap (GEMINI_MAX_COST_USD) nothing may be requested."""
    total, unknown = estimate(requests, price)
    if cap is None or not requests:
        return total
    if unknown:
        raise GeneratorError(
            f"GEMINI_MAX_COST_USD={cap:g} but the model table has no {mode} price for {model} at "
            f"{', '.join(unknown)}; add it with GEMINI_MODELS, or unset the cap. Nothing was requested"
        )
    if total > cap:
        raise GeneratorError(
            f"estimated ${total:.3f} for {len(requests)} image(s) on {model} ({mode}) is over "
            f"GEMINI_MAX_COST_USD={cap:g}; nothing was requested"
        )
    return total


@dataclass
class BatchRecord:
    """A Batch API job a drop is waiting on, written before the job is submitted (so a run that dies in
    between finds it again by its display name) and completed with the job's name once it exists."""

    display_name: str
    requests: list[dict]  # [{stem, key, brief, variant}] in the job's order
    job: str | None = None
    submitted_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, path: AnyPath) -> "BatchRecord | None":
        doc = read_json(path)
        return cls(**doc) if doc else None

    def save(self, path: AnyPath) -> None:
        write_json(path, self.__dict__)


def batch_display_name(drop: str, requests: Sequence[ImageRequest]) -> str:
    key = digest(sorted(r.job_key for r in requests), 16)
    return f"drop-studio/{drop}/{key}"


def reference_paths(drop_folder: AnyPath, req: ImageRequest) -> list[Reference]:
    return [Reference(drop_folder / r["path"], r["score"], r.get("sku") or "") for r in req.references]


def generate_interactive(gen, outputs: CampaignOutputs, drop: str, drop_folder: AnyPath, todo: Sequence[ImageRequest],
                         price: Callable[[str], float | None], concurrency: int, report: CampaignReport,
                         log: Callable[[str], None] = lambda m: None) -> None:
    """One request per image, a few in flight at once: image generation takes seconds, and the rate
    limit is per minute."""

    def run(req: ImageRequest):
        start = time.perf_counter()
        return req, gen.generate(req.brief, reference_paths(drop_folder, req), req.edit), round(time.perf_counter() - start, 2)

    report.requests += len(todo)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for req, result, seconds in pool.map(run, todo):
            cost = price(req.brief.image_size) if result.png is not None else 0.0
            outputs.record(req, result, drop, "interactive", cost, seconds, report, log)


def run_batch(gen, outputs: CampaignOutputs, record_path: AnyPath, drop: str, drop_folder: AnyPath,
              todo: list[ImageRequest], price: Callable[[str], float | None], cap: float | None,
              report: CampaignReport, log: Callable[[str], None] = lambda m: None) -> str | None:
    """GEMINI_MODE=batch, without a step waiting for hours: collect the drop's finished job if there is one,
    then submit what is still needed as one new job (unless one is still running). The job is recorded
    before it is submitted and found again by its display name, so a run that dies after submitting never
    submits the same requests twice. Returns the name of the job the drop now waits on, if any."""
    record = BatchRecord.load(record_path)
    if record is not None and record.job is None:
        record.job = gen.find_batch(record.display_name)
        if record.job is None:  # the submission never reached the API
            storage.remove(record_path)
            record = None
        else:
            log(f"found batch job {record.job} ({record.display_name}) submitted by a run that stopped")
            record.save(record_path)
    if record is not None:
        state, results = gen.batch_results(record.job)
        in_job = {r["key"] for r in record.requests}
        # A job submitted by the previous release knows its requests by their old keys.
        wanted = {**{r.legacy_key: r for r in todo if r.legacy_key}, **{r.job_key: r for r in todo}}
        submitted = {r.job_key for k, r in wanted.items() if k in in_job}
        if results is None:
            report.pending = len(submitted)
            log(f"batch job {record.job} is {state}: {report.pending} image(s) pending; the campaign_batches "
                f"sensor collects them when it finishes")
            return record.job
        for item in record.requests:
            req = wanted.get(item["key"])
            if req is None:
                log(f"{item['stem']}: its brief changed after {record.job} was submitted; that result is dropped")
                continue
            result = results.get(item["key"]) or Generation(req.brief.id, gen.name, gen.model, None,
                                                            text=f"batch job ended {state}",
                                                            finish_reason=f"BATCH_{state.removeprefix('JOB_STATE_')}")
            cost = price(req.brief.image_size) if result.png is not None else 0.0
            outputs.record(req, result, drop, "batch", cost, None, report, log, spent_now=False)
        storage.remove(record_path)
        log(f"collected batch job {record.job} ({state})")
        todo = [r for r in todo if r.job_key not in submitted]
    if not todo:
        return None
    check_budget(todo, price, cap, gen.model, "batch")  # over the cap: nothing is submitted
    for req in todo:  # the spend this run commits to, billed when the job runs
        report.spend(req, price(req.brief.image_size))
    requests = gen.batch_requests([(r.job_key, r.brief, reference_paths(drop_folder, r), r.edit) for r in todo])
    record = BatchRecord(batch_display_name(drop, todo),
                         [{"stem": r.stem, "key": r.job_key, "brief": r.brief.id, "variant": r.variant} for r in todo])
    record.save(record_path)
    record.job = gen.submit_batch(requests, record.display_name)
    record.save(record_path)
    report.requests += len(todo)
    report.pending = len(todo)
    log(f"submitted batch job {record.job}: {len(todo)} image(s); results come back within 24 h")
    return record.job


def make_campaign_images(drop: ProductDrop, art: DropArtifacts, gen, mode: str,
                         price: Callable[[str], float | None], cap: float | None, concurrency: int,
                         force: bool = False, log: Callable[[str], None] = lambda m: None,
                         warn: Callable[[str], None] = lambda m: None, revision: Revision | None = None,
                         shared_base_images: str | None = None) -> CampaignReport:
    """The drop's campaign images for its briefs and references: kept, generated (interactive: now; batch:
    submitted or collected) or refused; stale outputs removed. Fails only when no brief got an image.

    With `revision`, the run makes that one revision (interactively, within the cap) and nothing else:
    images whose briefs changed wait for the next full run."""
    briefs = read_briefs(art)
    refs = read_references(art)
    outputs = CampaignOutputs(campaign_dir(art))
    report = CampaignReport(briefs=len(briefs))
    max_references = getattr(gen, "max_reference_images", None)
    todo = outputs.plan(briefs, refs, gen.name, gen.model, force, report, log, max_references=max_references,
                        drop_folder=drop.folder, shared_base_images=shared_base_images)
    if revision is not None:
        report.waiting = len(todo)
        if todo:
            log(f"{len(todo)} image(s) of changed briefs wait for the next full run of campaign_images")
        wanted = outputs.revise(revision, briefs, refs, gen.name, gen.model, report, max_references)
        todo = [wanted] if wanted is not None else []
        if wanted is None:
            log(f"{report.revision} is already this revision of {revision.parent}; nothing was requested")
    if mode == "batch" and revision is None:
        report.batch_job = run_batch(gen, outputs, campaign_batch_path(art), drop.name, drop.folder, todo, price,
                                     cap, report, log)
    else:
        check_budget(todo, price, cap, gen.model, mode)  # over the cap: nothing is requested
        generate_interactive(gen, outputs, drop.name, drop.folder, todo, price, concurrency, report, warn)
    if revision is not None and str(outputs.png(image_stem(report.revision))) not in report.generated:
        blocked = next((b for b in report.blocked if b["brief"] == todo[0].brief.id), {}) if todo else {}
        raise GeneratorError(f"revision of {revision.parent}: the model made no image "
                             f"({blocked.get('reason', 'NO_IMAGE')}) {blocked.get('text', '')}".rstrip())
    report.removed_stale = outputs.remove_stale(report.request_keys)
    report.generated.sort()
    if briefs and not report.generated and not report.pending:
        raise GeneratorError(f"{drop.name}: no brief produced an image: " + ", ".join(
            f"{b['brief']} ({b['reason']})" for b in report.blocked))
    return report
