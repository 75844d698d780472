"""`campaign_images_decode`, evaluated inside the asset's step on the files it just wrote, so a run of several
drops records it on each drop's partition."""

from dagster import AssetCheckResult, AssetCheckSpec, MetadataValue

from ...domain.artifacts import DropArtifacts
from ...partitions import product_drops
from .logic import campaign_pngs
from .outputs import png_decodes

CAMPAIGN_IMAGES_DECODE = AssetCheckSpec(
    "campaign_images_decode", asset="campaign_images", partitions_def=product_drops,
    description="Every generated campaign PNG decodes and is not empty.",
)


def campaign_images_decode(art: DropArtifacts) -> AssetCheckResult:
    pngs = campaign_pngs(art)
    bad = [f"{png.name}: {problem}" for png in pngs if (problem := png_decodes(png))]
    return AssetCheckResult(check_name=CAMPAIGN_IMAGES_DECODE.name, passed=not bad,
                            metadata={"images": len(pngs), "broken": MetadataValue.json(bad)})
