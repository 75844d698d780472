"""Jobs over the drop graph; a run covers one drop (its partition) or a batch of neighbouring drops (a range),
and is tagged with them (`drop`, `drops`).

Which trigger runs which job is the table in README ("Drops over time: who runs what"): only `drop_graph` (a click or the
CLI) and `regenerate_campaigns` (the weekly schedule) include the billed `campaign_images`.
"""

from dagster import AssetSelection, define_asset_job

from assets_pkg.assets import (campaign_image_index, campaign_images, campaign_selects, product_drops, reference_images,
                               search_model)

# raw_product_images, product_catalog, clip_embeddings, product_image_collection
CATALOG = AssetSelection.groups("catalog")
# Every asset partitioned by drop (search_model is the one that is not).
DROP_GRAPH = AssetSelection.all() - AssetSelection.assets(search_model)

drop_graph_job = define_asset_job(
    "drop_graph",
    selection=DROP_GRAPH,
    partitions_def=product_drops,
    description="Every step for one product drop, campaign images (billed) included: for a click or the CLI.",
)

ingest_drop_job = define_asset_job(
    "ingest_drop",
    selection=DROP_GRAPH - AssetSelection.assets(campaign_images).downstream(),
    partitions_def=product_drops,
    description="A new or changed drop: images, embeddings, Milvus rows, briefs and references; no billed "
                "generation (campaign images wait for the weekly run or a click).",
)

refresh_catalog_job = define_asset_job(
    "refresh_catalog",
    selection=CATALOG,
    partitions_def=product_drops,
    description="Re-scan a drop and bring its embeddings and Milvus rows in line with the folder (no-op if "
                "unchanged); references follow when the rows changed.",
)

regenerate_campaigns_job = define_asset_job(
    "regenerate_campaigns",
    selection=AssetSelection.groups("campaigns"),
    partitions_def=product_drops,
    description="Re-read briefs, re-retrieve references and generate campaign images whose inputs changed.",
)

collect_campaign_images_job = define_asset_job(
    "collect_campaign_images",
    selection=AssetSelection.assets(campaign_images).downstream(),
    partitions_def=product_drops,
    description="GEMINI_MODE=batch: write the images of a finished Batch API job (launched by the "
                "campaign_batches sensor; submits what is still needed, within GEMINI_MAX_COST_USD) "
                "and index them for search.",
)

publish_selects_job = define_asset_job(
    "publish_selects",
    selection=AssetSelection.assets(campaign_selects),
    partitions_def=product_drops,
    description="Publish a drop's approved campaign images to PUBLISH_DIR with their manifests, and remove "
                "those no longer approved (launched by the campaign_reviews sensor).",
)

rebuild_for_model_job = define_asset_job(
    "rebuild_for_model",
    selection=CATALOG | AssetSelection.assets(campaign_image_index),
    partitions_def=product_drops,
    description="CLIP_MODEL changed: the drop's embeddings, product rows and campaign image rows for the new "
                "model, in its own collections, while search answers from the previous one (launched by the "
                "model_changes sensor for every drop).",
)

switch_search_model_job = define_asset_job(
    "switch_search_model",
    selection=AssetSelection.assets(search_model),
    description="Move search to the new model once every drop is built for it (launched by the model_changes "
                "sensor; at any time from the UI, where it only records where things stand).",
)

search_references_job = define_asset_job(
    "search_references",
    selection=AssetSelection.assets(reference_images),
    partitions_def=product_drops,
    description="Search every brief's references again with the model search now answers from (launched by "
                "the model_changes sensor after a switch).",
)
