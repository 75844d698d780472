"""One partition per product drop: the folder name is the partition key."""

import warnings

from dagster import DynamicPartitionsDefinition

product_drops = DynamicPartitionsDefinition(name="product_drops")

# Partitioned asset checks are a Dagster preview feature; they let each check see its drop.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
