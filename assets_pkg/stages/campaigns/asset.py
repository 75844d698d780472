"""campaign_images: the images each brief asks for, generated from its prompt and references (billed)."""

from dagster import AssetExecutionContext, Config, MetadataValue

from ...domain import listing, storage
from ...domain.sheets import contact_sheet
from ...metadata import contact_sheet_metadata
from ...metadata import table
from ...resources import ClipModel, DropLibrary, ImageGeneratorResource, MilvusResource, search_models
from ...stage import Outcome, drop_stage
from ..briefs.asset import campaign_briefs
from ..references.asset import reference_images
from .checks import CAMPAIGN_IMAGES_DECODE, CAMPAIGN_IMAGES_SCORES, campaign_images_decode, campaign_images_scores
from .logic import brief_shapes, campaign_dir, make_campaign_images, score_drop
from .requests import Revision
from .scores import Thresholds


SCORE_COLUMNS = {"image": "string", "weakest_product": "string", "product_fidelity": "float", "prompt_match": "float",
                 "own_prompt_nearest": "bool", "flagged": "string"}


class CampaignConfig(Config):
    force: bool = False  # regenerate even when prompt, model, settings and references are unchanged
    # A revision (the search page's Revise, POST /api/revise): this image, changed as the note says, becomes
    # the next variant of its brief; nothing else is generated in that run.
    revise: str = ""  # campaign/<stem>.png
    note: str = ""
    reviewer: str = ""


def sheet_is_current(sheet, report) -> bool:
    """The contact sheet an earlier run drew still shows the drop's campaign images: none was removed since,
    and none was written after it (a run that generated nothing draws nothing)."""
    drawn = listing.added_at(sheet)
    return drawn is not None and not report.removed_stale and \
        all((listing.added_at(storage.as_path(p)) or float("inf")) <= drawn for p in report.generated)


@drop_stage(
    deps=[reference_images, campaign_briefs],
    group_name="campaigns",
    kinds={"gemini", "png"},
    check_specs=[CAMPAIGN_IMAGES_DECODE, CAMPAIGN_IMAGES_SCORES],
    description="Campaign images per brief (1-4 variants), generated from the prompt and its reference images; "
                "PNG + JSON sidecar. GEMINI_MODE=batch submits a Batch API job and collects it in a later run. "
                "Each image is scored by the serving CLIP model against its product references and its prompt.",
)
def campaign_images(context: AssetExecutionContext, drop: str, config: CampaignConfig, library: DropLibrary,
                    generator: ImageGeneratorResource, clip: ClipModel, milvus: MilvusResource) -> Outcome:
    art = library.artifacts(drop)
    limits = Thresholds.from_settings()  # a bad value fails here, before any request
    gen = generator.generator()  # a shut-down model fails here, before any request
    revision = Revision(config.revise, config.note, config.reviewer) if config.revise else None
    mode = "interactive" if revision else generator.run_mode()  # a person waits for a revision
    info = generator.model_info()
    price = (lambda size: info.price(size, mode)) if generator.enabled else (lambda size: 0.0)
    report = make_campaign_images(library.drop(drop), art, gen, mode, price, generator.cost_cap(),
                                  generator.get("concurrency"), config.force, log=context.log.info,
                                  warn=context.log.warning, revision=revision,
                                  shared_base_images=library.get("base_images_dir"),
                                  shapes=brief_shapes(info, library.channels(drop)))
    sheet = contact_sheet_metadata(
        art.sheet_path("campaign"), "campaign", reuse=sheet_is_current(art.sheet_path("campaign"), report),
        draw=lambda: contact_sheet([(p, storage.as_path(p).stem) for p in report.generated], thumb=256, cols=4,
                                   title=f"{drop}: campaign images by {gen.name}"),
    )
    scores = score_drop(art, search_models(library, milvus).serving, clip.serving_encoder, limits)
    if scores.scored:
        context.log.info(f"{drop}: scored {len(scores.scored)} campaign images; {len(scores.flagged)} flagged")
    return Outcome(report.key, checks=[campaign_images_decode(art), campaign_images_scores(scores)], metadata={
        "generator": gen.name,
        "model": gen.model or "offline campaign board (no GEMINI_API_KEY)",
        "mode": mode,
        "briefs": report.briefs,
        "generated": len(report.generated),
        "cached": report.cached,
        "adopted": report.adopted,
        "blocked": MetadataValue.json(report.blocked),
        "requests": report.requests,
        "pending": report.pending,
        "batch_job": report.batch_job or "",
        "usage": MetadataValue.json(report.usage),
        "estimated_cost_usd": report.estimated_cost_usd,
        "estimated_cost_per_brief": MetadataValue.json(report.per_brief_cost_usd),
        "removed_stale": MetadataValue.json(report.removed_stale),
        **({"revision": report.revision, "revision_of": revision.parent, "revision_note": revision.note,
            "waiting_for_full_run": report.waiting} if revision else {}),
        "output_dir": MetadataValue.path(str(campaign_dir(art))),
        "scored": len(scores.scored),
        "flagged": len(scores.flagged),
        "scores": table(scores.table(), SCORE_COLUMNS),
        **sheet,
    })


ASSETS = [campaign_images]
