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
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from PIL import Image

from ...domain import storage
from ...domain.artifacts import DropArtifacts, read_json, write_json
from ...domain.drops import ProductDrop
from ...domain.errors import GeneratorError
from .generator import Generation, Reference
from ...domain.record import inputs_key
from ...domain.storage import AnyPath, write_atomic
from ..briefs.logic import Brief, read_briefs
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


def image_stem(brief_id: str, variant: int) -> str:
    return brief_id if variant == 1 else f"{brief_id}.v{variant}"


def image_request(brief: Brief, model: str, reference_hashes: list[str], max_references: int | None) -> dict:
    """What is sent for one image of `brief`: the model (or the offline board), the prompt, the image
    settings and the content hashes of the references that go with it, in order (a model takes at most
    `max_references`)."""
    return {"model": model, "prompt": brief.prompt, "aspect_ratio": brief.aspect_ratio,
            "image_size": brief.image_size, "references": reference_hashes[:max_references]}


def request_key(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def legacy_generation_key(brief: Brief, generator: str, model: str | None, reference_hashes: list[str],
                          variant: int) -> str | None:
    """The key the previous release gave an image (it hashed the whole brief); None for a brief that uses
    what that release did not have. An image whose sidecar holds it was made from this same request."""
    if brief.products or brief.where or brief.query is None:
        return None
    old_brief = {k: getattr(brief, k) for k in ("id", "prompt", "query", "top_k", "aspect_ratio", "image_size")}
    payload = {"brief": old_brief, "generator": generator, "model": model, "references": reference_hashes,
               "variant": variant}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def png_decodes(path: AnyPath) -> str | None:
    """None when the PNG decodes and is not empty, else what is wrong with it."""
    try:
        with Image.open(storage.image_source(path)) as im:
            im.load()
            if im.width == 0 or im.height == 0:
                return "empty image"
    except FileNotFoundError:
        return "missing"
    except Exception as e:  # any decoder complaint means a broken file
        return str(e) or type(e).__name__
    return None


@dataclass
class ImageRequest:
    """One image a brief needs: its variant, references, the request sent for it and its key."""

    brief: Brief
    variant: int
    references: list[dict]  # [{path, score, sha256, via, sku, name}]
    request: dict  # image_request(...)
    legacy_key: str | None = None

    @property
    def key(self) -> str:
        return request_key(self.request)

    @property
    def stem(self) -> str:
        return image_stem(self.brief.id, self.variant)

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

    @property
    def key(self) -> str:
        """What the campaign index depends on: the request behind each image, and which images exist."""
        return inputs_key(requests=self.request_keys, images=sorted(g.rsplit("/", 1)[-1] for g in self.generated))

    def spend(self, req: "ImageRequest", cost: float | None) -> None:
        self.estimated_cost_usd = round(self.estimated_cost_usd + (cost or 0.0), 6)
        self.per_brief_cost_usd[req.brief.id] = round(self.per_brief_cost_usd.get(req.brief.id, 0.0) + (cost or 0.0), 6)


class CampaignOutputs:
    """The campaign folder of one drop."""

    def __init__(self, folder: AnyPath):
        self.folder = folder

    def png(self, stem: str) -> AnyPath:
        return self.folder / f"{stem}.png"

    def sidecar(self, stem: str) -> AnyPath:
        return self.folder / f"{stem}.json"

    def plan(self, briefs: Sequence[Brief], refs: dict[str, list[dict]], generator: str, model: str | None,
             force: bool, report: CampaignReport, log: Callable[[str], None] = lambda m: None,
             max_references: int | None = None) -> list[ImageRequest]:
        """The images to ask for; kept images and kept refusals go into `report`. A kept image made under
        another key from the same request has its sidecar moved to the current key (nothing is billed)."""
        todo = []
        for brief in briefs:
            brief_refs = refs.get(brief.id, [])
            if any("sha256" not in r for r in brief_refs):
                raise GeneratorError(f"brief {brief.id!r}: its references were searched by an older Drop Studio "
                                     f"(no content hashes); materialize reference_images first")
            hashes = [r["sha256"] for r in brief_refs]
            for variant in range(1, brief.variants + 1):
                req = ImageRequest(brief, variant, brief_refs, image_request(brief, model or generator, hashes,
                                                                             max_references),
                                   legacy_generation_key(brief, generator, model, hashes, variant))
                report.request_keys[req.stem] = req.key
                previous = read_json(self.sidecar(req.stem), {})
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
        return todo

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
            "estimated_cost_usd": cost, "seconds": seconds, "cache_key": req.key,
        })
        for k, v in result.usage.items():
            if isinstance(v, (int, float)):
                report.usage[k] = report.usage.get(k, 0) + v
        if spent_now:
            report.spend(req, cost)

    def remove_stale(self, briefs: Iterable[Brief]) -> list[str]:
        """Outputs of briefs (or variants) no longer in briefs.yaml."""
        wanted = {image_stem(b.id, v) for b in briefs for v in range(1, b.variants + 1)}
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
    digest = hashlib.sha256(json.dumps(sorted(r.job_key for r in requests)).encode()).hexdigest()[:16]
    return f"drop-studio/{drop}/{digest}"


def reference_paths(drop_folder: AnyPath, req: ImageRequest) -> list[Reference]:
    return [Reference(drop_folder / r["path"], r["score"], r.get("sku") or "") for r in req.references]


def generate_interactive(gen, outputs: CampaignOutputs, drop: str, drop_folder: AnyPath, todo: Sequence[ImageRequest],
                         price: Callable[[str], float | None], concurrency: int, report: CampaignReport,
                         log: Callable[[str], None] = lambda m: None) -> None:
    """One request per image, a few in flight at once: image generation takes seconds, and the rate
    limit is per minute."""

    def run(req: ImageRequest):
        start = time.perf_counter()
        return req, gen.generate(req.brief, reference_paths(drop_folder, req)), round(time.perf_counter() - start, 2)

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
    requests = gen.batch_requests([(r.job_key, r.brief, reference_paths(drop_folder, r)) for r in todo])
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
                         warn: Callable[[str], None] = lambda m: None) -> CampaignReport:
    """The drop's campaign images for its briefs and references: kept, generated (interactive: now; batch:
    submitted or collected) or refused; stale outputs removed. Fails only when no brief got an image."""
    briefs = read_briefs(art)
    outputs = CampaignOutputs(campaign_dir(art))
    report = CampaignReport(briefs=len(briefs))
    todo = outputs.plan(briefs, read_references(art), gen.name, gen.model, force, report, log,
                        max_references=getattr(gen, "max_reference_images", None))
    if mode == "batch":
        report.batch_job = run_batch(gen, outputs, campaign_batch_path(art), drop.name, drop.folder, todo, price,
                                     cap, report, log)
    else:
        check_budget(todo, price, cap, gen.model, mode)  # over the cap: nothing is requested
        generate_interactive(gen, outputs, drop.name, drop.folder, todo, price, concurrency, report, warn)
    report.removed_stale = outputs.remove_stale(briefs)
    report.generated.sort()
    if briefs and not report.generated and not report.pending:
        raise GeneratorError(f"{drop.name}: no brief produced an image: " + ", ".join(
            f"{b['brief']} ({b['reason']})" for b in report.blocked))
    return report
