"""reference_images: for each brief, the images of the products it names, then the best matches of its query."""

from dagster import AssetExecutionContext, AutomationCondition, Config, MetadataValue

from ...domain.errors import StudioError
from ...domain.sheets import contact_sheet
from ...metadata import SHEET_LIMIT, contact_sheet_metadata, table
from ...resources import ClipModel, DropLibrary, MilvusResource, search_models
from ...stage import Outcome, drop_stage
from ..briefs.asset import campaign_briefs
from ..collection.asset import product_image_collection
from .checks import EVERY_BRIEF_HAS_REFERENCES, every_brief_has_references
from .logic import find_references

REFERENCE_COLUMNS = {"brief": "string", "query": "string", "rank": "int", "path": "string", "via": "string",
                     "sku": "string", "name": "string", "score": "float"}


def ref_label(r: dict) -> str:
    """A reference's caption: its SKU when the catalog knows it, then its score (or "named" for a product
    the brief names)."""
    how = "named" if r.get("via") == "sku" else f"{r['score']:.2f}"
    return f"{r['sku']} {how}" if r.get("sku") else how


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


@drop_stage(
    deps=[product_image_collection, campaign_briefs],
    group_name="campaigns",
    kinds={"milvus", "pytorch"},
    automation_condition=FOLLOWS_ITS_INPUTS,
    check_specs=[EVERY_BRIEF_HAS_REFERENCES],
    description="For each brief, the drop's best-matching images for its query (CLIP text-to-image search in Milvus).",
)
def reference_images(context: AssetExecutionContext, drop: str, config: ReferencesConfig, library: DropLibrary,
                     clip: ClipModel, milvus: MilvusResource) -> Outcome:
    folder = library.drop(drop)
    art = library.artifacts(drop)
    serving = search_models(library, milvus).serving  # until a change of model is built, the previous one
    if serving is None:
        raise StudioError(f"{drop}: no model has built a collection yet; run the drop's embeddings first")
    report = find_references(drop, art, lambda: clip.serving_encoder(serving),
                             lambda: milvus.store(collection=serving.collection), force=config.search_again,
                             files=serving.files(art))
    if report.adopted:
        context.log.info(f"{drop}: references searched by the previous release for the same briefs and rows; "
                         f"kept (a changed brief, catalog or image searches again)")
    elif not report.searched:
        context.log.info(f"{drop}: briefs and Milvus rows unchanged since the last search; references kept")
    rows = [{"brief": b.id, "query": b.query or "", "rank": k + 1, "path": r["path"], "via": r.get("via", "search"),
             "sku": r.get("sku") or "", "name": r.get("name") or "", "score": r["score"]}
            for b in report.briefs for k, r in enumerate(report.refs.get(b.id, []))]
    for b in report.briefs:
        context.log.info(f"{b.id} ({b.query or ', '.join(b.products)!r}): " + ", ".join(
            f"{r['path']} {ref_label(r)}" for r in report.refs.get(b.id, [])))
    sheet = contact_sheet_metadata(
        art.sheet_path("references"), "references", reuse=not report.searched,
        draw=lambda: contact_sheet([(folder.folder / r["path"], f"{r['brief']} #{r['rank']} {ref_label(r)}")
                                    for r in rows[:SHEET_LIMIT]],
                                   cols=min(max([b.top_k for b in report.briefs] or [1]), 8),
                                   title=f"{drop}: references per brief"),
    )
    return Outcome(report.key, checks=[every_brief_has_references(report)], metadata={
        "briefs": len(report.briefs),
        "references": report.count,
        "searched": report.searched,
        "briefs_without_references": MetadataValue.json(report.briefs_without_references),
        "table": table(rows, REFERENCE_COLUMNS),
        **sheet,
    })


ASSETS = [reference_images]
