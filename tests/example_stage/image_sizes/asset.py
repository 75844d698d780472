"""image_sizes: the drop's images by orientation."""

from dagster import AssetExecutionContext, MetadataValue

from assets_pkg.resources import DropLibrary
from assets_pkg.stage import Outcome, drop_stage
from assets_pkg.stages.scan.asset import raw_product_images

from .logic import count_sizes


@drop_stage(deps=[raw_product_images], group_name="catalog", description="The drop's images by orientation.")
def image_sizes(context: AssetExecutionContext, drop: str, library: DropLibrary) -> Outcome:
    report = count_sizes(library.artifacts(drop))
    return Outcome(report.key, {"counted": report.counted, "orientations": MetadataValue.json(report.orientations)})


ASSETS = [image_sizes]
