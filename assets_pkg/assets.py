"""The lineage graph, one partition per product drop:

raw_product_images -> clip_embeddings --> product_image_collection --> reference_images --> campaign_images
  `-> product_catalog -------------------------^   `------> campaign_briefs --^                    |
                                                                       campaign_image_index <-----'

Wiring per group: catalog/ (the first four), campaigns/ (the rest); each asset's logic is the domain module
of its stage (domain/scan, embeddings, collection, briefs, references, campaigns).
"""

from .campaigns.assets import campaign_assets, campaign_briefs, campaign_image_index, campaign_images, reference_images
from .campaigns.checks import campaign_images_decode
from .catalog.assets import (catalog_assets, clip_embeddings, product_catalog, product_image_collection,
                             raw_product_images)
from .partitions import product_drops

drop_assets = [*catalog_assets, *campaign_assets]
drop_checks = [campaign_images_decode]  # the other checks run inside their asset's step (check_specs)

__all__ = ["drop_assets", "drop_checks", "campaign_images_decode", "product_drops", "raw_product_images", "product_catalog", "clip_embeddings",
           "product_image_collection", "campaign_briefs", "reference_images", "campaign_images",
           "campaign_image_index"]
