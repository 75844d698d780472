"""The lineage graph, one partition per product drop, and the one list of its stages:

raw_product_images -> clip_embeddings --> product_image_collection --> reference_images --> campaign_images
  `-> product_catalog -------------------------^   `------> campaign_briefs --^                    |
                        clip_embeddings -> product_duplicates                                       |
                                                                       campaign_image_index <-----|
                                                                       campaign_selects <---------'
product_image_collection, campaign_image_index (every drop) -> search_model (which model search answers from)

Each stage is a folder of stages/: `logic.py` (what it does, no Dagster), `asset.py` (its asset, `ASSETS`,
and checks of their own, `CHECKS`), `checks.py` (checks evaluated in its step) when it has any. A new stage
is a new folder and one line in STAGES.
"""

from types import ModuleType

from .partitions import product_drops
from .stages.briefs import asset as briefs
from .stages.campaign_index import asset as campaign_index
from .stages.campaigns import asset as campaigns
from .stages.catalog import asset as catalog
from .stages.collection import asset as collection
from .stages.duplicates import asset as duplicates
from .stages.embeddings import asset as embeddings
from .stages.references import asset as references
from .stages.scan import asset as scan
from .stages.search_model import asset as search_model_stage
from .stages.selects import asset as selects

STAGES = [scan, catalog, embeddings, duplicates, collection, briefs, references, campaigns, campaign_index, selects]


def stage_assets(stages: list[ModuleType]) -> tuple[list, list]:
    """(assets, checks of their own) of these stages."""
    return ([a for s in stages for a in s.ASSETS], [c for s in stages for c in getattr(s, "CHECKS", [])])


drop_assets, drop_checks = stage_assets(STAGES)
# Not a drop's stage: one asset over every drop (its state is domain/search_models.py's file).
search_assets = search_model_stage.ASSETS

raw_product_images = scan.raw_product_images
product_catalog = catalog.product_catalog
clip_embeddings = embeddings.clip_embeddings
product_duplicates = duplicates.product_duplicates
product_image_collection = collection.product_image_collection
campaign_briefs = briefs.campaign_briefs
reference_images = references.reference_images
campaign_images = campaigns.campaign_images
campaign_image_index = campaign_index.campaign_image_index
campaign_selects = selects.campaign_selects
search_model = search_model_stage.search_model  # not partitioned: the one model search answers from

__all__ = ["STAGES", "stage_assets", "drop_assets", "drop_checks", "search_assets", "product_drops", "raw_product_images",
           "product_catalog", "clip_embeddings", "product_duplicates", "product_image_collection", "campaign_briefs", "reference_images",
           "campaign_images", "campaign_image_index", "campaign_selects", "search_model"]
