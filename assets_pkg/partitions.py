"""One partition per product drop (the folder name is the partition key), and runs that carry several drops.

A run of several drops is a partition range, which Dagster orders as the partitions were added: a batch is
drops next to each other in that order, at most `size` of them. One drop is a run with that partition key.
"""

from __future__ import annotations

import warnings

from dagster import DynamicPartitionsDefinition, RunRequest

product_drops = DynamicPartitionsDefinition(name="product_drops")

# Partitioned asset checks and the assets' backfill policy are Dagster preview/beta features; they let each
# check see its drop and a backfill go out in runs of several drops.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`")

# The run tags by which Dagster's own backfills give a run a partition range (RunRequest has no field for it).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def run_drops(tags: dict) -> tuple[str, str] | None:
    """(first, last) drop of a run that carries a range, from its tags."""
    if RANGE_START_TAG in tags:
        return tags[RANGE_START_TAG], tags[RANGE_END_TAG]
    return None


def drops_request(drops: list[str], run_key: str, tags: dict | None = None, **kwargs) -> RunRequest:
    """A run request for one drop (its partition) or for a batch of neighbouring drops (their range)."""
    tags = {**(tags or {}), "drops": str(len(drops))}
    if len(drops) == 1:
        return RunRequest(run_key=run_key, partition_key=drops[0], tags={"drop": drops[0], **tags}, **kwargs)
    return RunRequest(run_key=run_key, tags={RANGE_START_TAG: drops[0], RANGE_END_TAG: drops[-1],
                                             "drop": f"{drops[0]}..{drops[-1]}", **tags}, **kwargs)
