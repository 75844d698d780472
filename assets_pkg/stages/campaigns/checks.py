"""`campaign_images_decode` and `campaign_images_scores`, evaluated inside the asset's step on the files it
just wrote and the scores it just computed, so a run of several drops records them on each drop's partition."""

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from ...domain.artifacts import DropArtifacts
from ...partitions import product_drops
from .logic import campaign_pngs
from .outputs import png_decodes
from .scores import ScoreReport

CAMPAIGN_IMAGES_DECODE = AssetCheckSpec(
    "campaign_images_decode", asset="campaign_images", partitions_def=product_drops,
    description="Every generated campaign PNG decodes and is not empty.",
)


def campaign_images_decode(art: DropArtifacts) -> AssetCheckResult:
    pngs = campaign_pngs(art)
    bad = [f"{png.name}: {problem}" for png in pngs if (problem := png_decodes(png))]
    return AssetCheckResult(check_name=CAMPAIGN_IMAGES_DECODE.name, passed=not bad,
                            metadata={"images": len(pngs), "broken": MetadataValue.json(bad)})


CAMPAIGN_IMAGES_SCORES = AssetCheckSpec(
    "campaign_images_scores", asset="campaign_images", partitions_def=product_drops,
    description="No candidate's weakest product is less like its photos than the drop's pictures are like one "
                "another, and none matches another brief's prompt better than its own (or the fixed "
                "SCORE_FIDELITY_MIN / SCORE_PROMPT_MIN). A warning: a person decides; PUBLISH_REQUIRES_SCORES=true "
                "keeps flagged images from being published.",
)


def campaign_images_scores(report: ScoreReport) -> AssetCheckResult:
    return AssetCheckResult(check_name=CAMPAIGN_IMAGES_SCORES.name, passed=not report.flagged,
                            severity=AssetCheckSeverity.WARN,
                            metadata={"scored": len(report.scores), "median_product_similarity": report.median,
                                      "flagged": MetadataValue.json([{"image": i, "reasons": r}
                                                                     for i, r in sorted(report.flagged.items())])})
