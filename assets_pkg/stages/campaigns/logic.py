"""The campaign stage: which images a drop's briefs need, which are kept, what a run may spend, and the
files each image leaves (`<brief>.png`, or `<brief>.v<n>.png` for variant n > 1, each with a JSON sidecar).
Interactive and batch generation share the caching, refusal and spending rules, each in a module of its own:
requests.py (what is sent, its key), outputs.py (the files and the run's report), budget.py, batch.py.

An image is keyed by exactly what is sent to the model (`image_request`: model, prompt, image settings, the
reference images that go with it, by content and in order): the same key means the same billed request, so
an unchanged request is never billed twice, and neither is a refusal the model gave to it. Each sidecar
records that request, and an image made under an older key is adopted when its request is the same, so a
change of key bills nothing.

Files: campaign/<brief>.png with its <brief>.json sidecar (<brief>.v2.png ... for variants), and
campaign-batch.json (the Batch API job the drop's images wait on, GEMINI_MODE=batch).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence


from ...domain import listing, upgrade
from ...domain.artifacts import DropArtifacts, digest
from ...domain.channels import Channel, requests_for
from ...domain.drops import ProductDrop
from ...domain.image_models import SIZE_PIXELS, ImageModel
from ...domain.errors import GeneratorError
from ...domain.reviews import image_stem
from ...domain.storage import AnyPath
from ..briefs.logic import Brief, read_briefs
from ..embeddings.logic import embeddings_info, read_embeddings
from ..references.logic import read_references
from .batch import run_batch
from .budget import check_budget
from .outputs import CampaignOutputs, CampaignReport
from .requests import ImageRequest, Revision, reference_paths
from .scores import ScoreReport, Thresholds, score_campaign_images

FILES = ("campaign/", "campaign-batch.json", "scores.json", "campaign-vectors.parquet")

def campaign_dir(art: DropArtifacts) -> AnyPath:
    return art / "campaign"


def campaign_png_entries(art: DropArtifacts) -> list[listing.Entry]:
    """The generated PNGs as one listing shows them (size and version, nothing read)."""
    return [e for e in listing.list_files(campaign_dir(art)) if e.rel.endswith(".png") and "/" not in e.rel]


def campaign_pngs(art: DropArtifacts) -> list[AnyPath]:
    return [e.path for e in campaign_png_entries(art)]


def campaign_batch_path(art: DropArtifacts) -> AnyPath:
    """The Batch API job the drop's campaign images wait on (GEMINI_MODE=batch)."""
    return art / "campaign-batch.json"


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


def score_drop(art: DropArtifacts, serving, serving_encoder, limits: Thresholds) -> ScoreReport:
    """The drop's campaign images scored by the serving model (`serving`: its ModelEntry; none before any
    drop was embedded)."""
    if serving is None:
        return ScoreReport()
    files = serving.files(art)
    stems = [e.rel[:-len(".png")] for e in campaign_png_entries(art)]
    prompts = {b.id: b.prompt for b in read_briefs(art)}
    return score_campaign_images(CampaignOutputs(campaign_dir(art)), stems, prompts, serving.id, files,
                                 lambda: read_embeddings(files)[:2], digest(embeddings_info(files)),
                                 lambda: serving_encoder(serving), limits)


def brief_shapes(info: ImageModel, channels: dict[str, Channel]):
    """brief -> [(the brief as asked, None), (the brief at another ratio, that ratio), ...]: for a brief with
    channels, one request per distinct aspect ratio they need (the nearest the model offers), at the smallest
    size that covers each of that ratio's channels (domain/channels.requests_for); its own image is one of
    them, at least at the size it names."""

    def shapes(brief: Brief) -> list[tuple[Brief, str | None]]:
        if not brief.channels:
            return [(brief, None)]
        plan = requests_for([channels[c] for c in brief.channels], info.aspect_ratios, info.sizes)
        own = plan.pop(brief.aspect_ratio or "1:1", None)
        first = brief if own is None or SIZE_PIXELS[own] <= SIZE_PIXELS[brief.image_size] else \
            brief.at(brief.aspect_ratio, own)
        return [(first, None)] + [(brief.at(r, size), r) for r, size in sorted(plan.items())]

    return shapes


def make_campaign_images(drop: ProductDrop, art: DropArtifacts, gen, mode: str,
                         price: Callable[[str], float | None], cap: float | None, concurrency: int,
                         force: bool = False, log: Callable[[str], None] = lambda m: None,
                         warn: Callable[[str], None] = lambda m: None, revision: Revision | None = None,
                         shared_base_images: str | None = None, shapes=lambda b: [(b, None)]) -> CampaignReport:
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
                        drop_folder=drop.folder, shared_base_images=shared_base_images, shapes=shapes)
    upgrade.done(art, "campaigns")  # an earlier release's images were taken by this plan, or there were none
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
