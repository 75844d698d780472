"""campaign_selects: the approved campaign images of a drop, published to PUBLISH_DIR with their manifests."""

from dagster import AssetExecutionContext, AutomationCondition, MetadataValue

from ...domain import storage
from ...metadata import table
from ...resources import DropLibrary
from ...stage import Outcome, drop_stage
from ..campaigns.asset import campaign_images
from .logic import publish_selects

DECISION_COLUMNS = {"image": "string", "decision": "string", "reviewer": "string", "time": "string",
                    "note": "string"}


@drop_stage(
    deps=[campaign_images],
    group_name="campaigns",
    kinds={"png", "csv"},
    # Follows campaign_images (a revision, a regenerated image); the campaign_reviews sensor runs it when
    # decisions change.
    automation_condition=AutomationCondition.eager(),
    description="The drop's approved campaign images, copied to `<PUBLISH_DIR>/<drop>/` with manifest.csv and "
                "manifest.json (brief, prompt, model, cost, references with content hashes and SKUs, parent and "
                "note of revisions, reviewer and time); images no longer approved are removed there.",
)
def campaign_selects(context: AssetExecutionContext, drop: str, library: DropLibrary) -> Outcome:
    report = publish_selects(drop, library.artifacts(drop), storage.location("PUBLISH_DIR", library.get("publish_dir")))
    decisions = sorted(report.decisions.values(), key=lambda d: d.image)
    return Outcome(report.key, {
        "published": len(report.rows),
        "approved": sum(d.decision == "approve" for d in decisions),
        "rejected": sum(d.decision == "reject" for d in decisions),
        "copied": MetadataValue.json(report.copied),
        "removed": MetadataValue.json(report.removed),
        "approved_but_missing": MetadataValue.json(report.approved_missing),
        "decisions": table([d.to_dict() for d in decisions], DECISION_COLUMNS),
        "publish_dir": MetadataValue.path(report.folder),
        "dagster/row_count": len(report.rows),
    })


ASSETS = [campaign_selects]
