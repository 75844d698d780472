"""campaign_briefs + product_image_collection -> reference_images -> campaign_images, one partition per drop.

Each body reads its inputs, calls its stage in `domain/` (briefs, references, campaigns) and turns the
stage's report into metadata.
"""

from ..domain import storage

from dagster import (
    AssetExecutionContext,
    AutomationCondition,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..catalog.assets import product_catalog, product_image_collection
from ..domain.artifacts import digest
from ..domain.briefs import check_products, load_briefs
from ..domain.campaign_index import campaign_collection, campaign_uri, index_campaign_images
from ..domain.campaigns import make_campaign_images
from ..domain.references import find_references
from ..domain.sheets import contact_sheet
from ..metadata import SHEET_LIMIT, contact_sheet_metadata, fail_clearly, table
from ..partitions import product_drops
from ..resources import ClipModel, DropLibrary, ImageGeneratorResource, MilvusResource
from .checks import EVERY_BRIEF_HAS_REFERENCES, every_brief_has_references

BRIEF_COLUMNS = {"id": "string", "query": "string", "products": "string", "where": "string", "top_k": "int",
                 "aspect_ratio": "string", "image_size": "string", "variants": "int", "prompt": "string"}
REFERENCE_COLUMNS = {"brief": "string", "query": "string", "rank": "int", "path": "string", "via": "string",
                     "sku": "string", "name": "string", "score": "float"}


def _brief_row(b) -> dict:
    return {**b.to_dict(), "products": ", ".join(b.products),
            "where": ", ".join(f"{k}={v}" for k, v in b.where.items())}


def _ref_label(r: dict) -> str:
    """A reference's caption: its SKU when the catalog knows it, then its score (or "named" for a product
    the brief names)."""
    how = "named" if r.get("via") == "sku" else f"{r['score']:.2f}"
    return f"{r['sku']} {how}" if r.get("sku") else how


@asset(
    partitions_def=product_drops,
    deps=[product_catalog],
    group_name="campaigns",
    kinds={"yaml"},
    description="Validated campaign briefs from <drop>/briefs.yaml (id, prompt, query, products, where, top_k, "
                "aspect_ratio); every SKU a brief names is in the drop's catalog.",
)
@fail_clearly
def campaign_briefs(
    context: AssetExecutionContext, library: DropLibrary, generator: ImageGeneratorResource
) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    # Sizes and aspect ratios are checked against the configured model, so a brief it cannot serve
    # fails here, naming the file and the brief, before anything is searched or billed.
    briefs = load_briefs(drop.briefs_file, model=generator.model_info(), default_size=generator.get("image_size"))
    art = library.artifacts(drop.name)
    check_products(briefs, art.read_catalog(), drop.briefs_file)  # an unknown SKU fails here, before any search
    art.write_briefs(briefs)
    if not storage.exists(drop.briefs_file):
        context.log.info(f"{drop.briefs_file} not found: no campaign briefs for {drop.name}")
    return MaterializeResult(
        data_version=DataVersion(digest([b.to_dict() for b in briefs])),
        metadata={
            "briefs": len(briefs),
            "file": MetadataValue.path(str(drop.briefs_file)),
            "table": table([_brief_row(b) for b in briefs], BRIEF_COLUMNS),
        }
    )


# reference_images follows its inputs: a run of any kind (the nightly refresh, a click on an upstream
# asset in the UI) that changes the drop's Milvus rows or its briefs is followed by a search for that drop.
# It keys on data versions, so a refresh that changed nothing launches nothing; and a run that already
# searched (the drop sensor's, the weekly one) is not followed by a second search.
INPUTS_CHANGED = AutomationCondition.any_deps_match(
    AutomationCondition.data_version_changed() & ~AutomationCondition.executed_with_root_target()
).with_label("rows_or_briefs_changed")
FOLLOWS_ITS_INPUTS = AutomationCondition.eager().replace("any_deps_updated", INPUTS_CHANGED)


class ReferencesConfig(Config):
    # search again although briefs, weights and rows are unchanged (kept references may predate a better
    # ranking, e.g. after an upgrade); changed references make their campaign images new requests
    search_again: bool = False


@asset(
    partitions_def=product_drops,
    deps=[product_image_collection, campaign_briefs],
    group_name="campaigns",
    kinds={"milvus", "pytorch"},
    automation_condition=FOLLOWS_ITS_INPUTS,
    check_specs=[EVERY_BRIEF_HAS_REFERENCES],
    description="For each brief, the drop's best-matching images for its query (CLIP text-to-image search in Milvus).",
)
@fail_clearly
def reference_images(
    context: AssetExecutionContext, config: ReferencesConfig, library: DropLibrary, clip: ClipModel,
    milvus: MilvusResource
) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    report = find_references(drop.name, art, clip.encoder, milvus.store, force=config.search_again)
    if report.adopted:
        context.log.info(f"{drop.name}: references searched by the previous release for the same briefs and rows; "
                         f"kept (a changed brief, catalog or image searches again)")
    elif not report.searched:
        context.log.info(f"{drop.name}: briefs and Milvus rows unchanged since the last search; references kept")
    rows = [{"brief": b.id, "query": b.query or "", "rank": k + 1, "path": r["path"], "via": r.get("via", "search"),
             "sku": r.get("sku") or "", "name": r.get("name") or "", "score": r["score"]}
            for b in report.briefs for k, r in enumerate(report.refs.get(b.id, []))]
    for b in report.briefs:
        context.log.info(f"{b.id} ({b.query or ', '.join(b.products)!r}): " + ", ".join(
            f"{r['path']} {_ref_label(r)}" for r in report.refs.get(b.id, [])))
    sheet = contact_sheet_metadata(
        art.sheet_path("references"), "references", reuse=not report.searched,
        draw=lambda: contact_sheet([(drop.folder / r["path"], f"{r['brief']} #{r['rank']} {_ref_label(r)}")
                                    for r in rows[:SHEET_LIMIT]],
                                   cols=min(max([b.top_k for b in report.briefs] or [1]), 8),
                                   title=f"{drop.name}: references per brief"),
    )
    return MaterializeResult(
        check_results=[every_brief_has_references(report)],
        metadata={
            "briefs": len(report.briefs),
            "references": report.count,
            "searched": report.searched,
            "briefs_without_references": MetadataValue.json(report.briefs_without_references),
            "table": table(rows, REFERENCE_COLUMNS),
            **sheet,
        }
    )


class CampaignConfig(Config):
    force: bool = False  # regenerate even when prompt, model, settings and references are unchanged


@asset(
    partitions_def=product_drops,
    deps=[reference_images, campaign_briefs],
    group_name="campaigns",
    kinds={"gemini", "png"},
    description="Campaign images per brief (1-4 variants), generated from the prompt and its reference images; "
                "PNG + JSON sidecar. GEMINI_MODE=batch submits a Batch API job and collects it in a later run.",
)
@fail_clearly
def campaign_images(
    context: AssetExecutionContext, config: CampaignConfig, library: DropLibrary, generator: ImageGeneratorResource
) -> MaterializeResult:
    drop = library.drop(context.partition_key)
    art = library.artifacts(drop.name)
    gen = generator.generator()  # a shut-down model fails here, before any request
    mode = generator.run_mode()
    info = generator.model_info()
    price = (lambda size: info.price(size, mode)) if generator.enabled else (lambda size: 0.0)
    report = make_campaign_images(drop, art, gen, mode, price, generator.cost_cap(), generator.get("concurrency"),
                                  config.force, log=context.log.info, warn=context.log.warning)
    sheet = contact_sheet_metadata(
        art.sheet_path("campaign"), "campaign", reuse=False,
        draw=lambda: contact_sheet([(p, storage.as_path(p).stem) for p in report.generated], thumb=256, cols=4,
                                   title=f"{drop.name}: campaign images by {gen.name}"),
    )
    return MaterializeResult(
        metadata={
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
            "output_dir": MetadataValue.path(str(art.campaign_dir)),
            **sheet,
        }
    )


@asset(
    partitions_def=product_drops,
    deps=[campaign_images],
    group_name="campaigns",
    kinds={"milvus", "pytorch"},
    # Follows campaign_images whenever a run made them without it (a click on campaign_images alone).
    automation_condition=AutomationCondition.eager(),
    description="The drop's campaign images in their own Milvus collection (<collection>_campaigns), so text "
                "search finds generated images too; only new images are encoded.",
)
@fail_clearly
def campaign_image_index(context: AssetExecutionContext, library: DropLibrary, clip: ClipModel,
                         milvus: MilvusResource) -> MaterializeResult:
    drop = context.partition_key
    collection = campaign_collection(milvus.get("collection"))
    report = index_campaign_images(drop, library.artifacts(drop), clip.model_id(), clip.encoder,
                                   milvus.campaign_store, campaign_uri(milvus.get("uri")), collection)
    if not report.synced:
        context.log.info(f"{drop}: campaign images unchanged since a verified sync; Milvus not opened")
    return MaterializeResult(metadata={
        "images": report.images, "encoded": report.encoded, "upserted": report.upserted,
        "deleted": report.deleted, "indexed": report.indexed, "synced": report.synced,
        "dagster/row_count": report.indexed, "collection": collection,
    })


campaign_assets = [campaign_briefs, reference_images, campaign_images, campaign_image_index]
