"""campaign_selects: the approved campaign images of a drop, published to PUBLISH_DIR with their manifests."""

from dagster import AssetExecutionContext, AutomationCondition, MetadataValue

from ...domain import storage
from ...metadata import table
from ...resources import DropLibrary, MilvusResource, search_models
from ...stage import Outcome, drop_stage
from ..campaigns.asset import campaign_images
from ...domain.settings import setting
from ..campaigns.scores import Thresholds, flagged, read_scores
from .logic import publish_selects
from .provenance import BrandSigner, SigningError
from .publishing import reader_of

RENDITION_TABLE = {"image": "string", "channel": "string", "width": "int", "height": "int", "bytes": "int",
                   "signed": "bool", "upscaled": "bool", "source": "string"}
DECISION_COLUMNS = {"image": "string", "decision": "string", "reviewer": "string", "time": "string",
                    "note": "string", "channel": "string"}


@drop_stage(
    deps=[campaign_images],
    group_name="campaigns",
    kinds={"png", "csv"},
    # Follows campaign_images (a revision, a regenerated image); the campaign_reviews sensor runs it when
    # decisions change.
    automation_condition=AutomationCondition.eager(),
    description="The drop's approved campaign images, copied to `<PUBLISH_DIR>/<drop>/` with manifest.csv and "
                "manifest.json (brief, prompt, model, cost, references with content hashes and SKUs, parent and "
                "note of revisions, reviewer and time); images no longer approved are removed there. A brief that "
                "names `channels` also gets a rendition per channel at its exact size, with XMP and, given a "
                "certificate, a signed C2PA manifest.",
)
def campaign_selects(context: AssetExecutionContext, drop: str, library: DropLibrary, milvus: MilvusResource) -> Outcome:
    shared = library.get("base_images_dir")
    scores, flagged = drop_scores(library, milvus, drop)
    report = publish_selects(drop, library.artifacts(drop), storage.location("PUBLISH_DIR", library.get("publish_dir")),
                             channels=library.channels(drop), load_signer=brand_signer,
                             read_ingredient=reader_of(library.drop(drop).folder,
                                                       storage.location("BASE_IMAGES_DIR", shared) if shared else None),
                             scores=scores, flagged=flagged, requires_scores=setting("PUBLISH_REQUIRES_SCORES"))
    for line in report.flagged:
        context.log.warning(f"{drop}: approved but not published (PUBLISH_REQUIRES_SCORES): {line}")
    if report.unsigned:
        context.log.warning(f"{drop}: renditions published unsigned (no C2PA certificate: set C2PA_SIGN_CERT and "
                            f"C2PA_PRIVATE_KEY to sign them)")
    for line in report.refused:
        context.log.warning(f"{drop}: not published: {line}")
    for line in report.held:
        context.log.info(f"{drop}: not published, as reviewed: {line}")
    decisions = sorted(report.decisions.values(), key=lambda d: d.image)
    renditions = [r for r in report.rows if "channel" in r]
    return Outcome(report.key, {
        "renditions": len(renditions),
        "renditions_signed": sum(bool(r["signed"]) for r in renditions),
        "renditions_refused": MetadataValue.json(report.refused),
        "renditions_rejected": MetadataValue.json(report.held),
        "held_back_flagged": MetadataValue.json(report.flagged),
        "rendition_table": table([{k: r[k] for k in RENDITION_TABLE} for r in renditions], RENDITION_TABLE),
        "published": len(report.rows),
        "approved": sum(d.decision == "approve" for d in decisions),
        "rejected": sum(d.decision == "reject" for d in decisions),
        "copied": MetadataValue.json(report.copied),
        "removed": MetadataValue.json(report.removed),
        "approved_but_missing": MetadataValue.json(report.approved_missing),
        "decisions": table([d.to_dict() for d in sorted([*decisions, *report.on_channels.values()],
                                                        key=lambda d: d.subject)], DECISION_COLUMNS),
        "publish_dir": MetadataValue.path(report.folder),
        "dagster/row_count": len(report.rows),
    })


def drop_scores(library: DropLibrary, milvus: MilvusResource, drop: str) -> tuple[dict, dict]:
    """(image -> its scores, image -> why it is flagged) by the serving model, as campaign_images left them."""
    serving = search_models(library, milvus).serving
    if serving is None:
        return {}, {}
    stored = read_scores(serving.files(library.artifacts(drop)))
    return stored.get("images", {}), flagged(stored, Thresholds.from_settings())


def brand_signer() -> BrandSigner | None:
    """The brand's C2PA signer from C2PA_SIGN_CERT and C2PA_PRIVATE_KEY (checked), or None when neither is set."""
    cert, key = setting("C2PA_SIGN_CERT"), setting("C2PA_PRIVATE_KEY")
    if not cert and not key:
        return None
    if not (cert and key):
        raise SigningError("C2PA_SIGN_CERT and C2PA_PRIVATE_KEY go together: set both (the certificate chain and "
                           "its private key), or neither")
    return BrandSigner.load(cert, key)


ASSETS = [campaign_selects]
