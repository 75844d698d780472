"""What makes a stage's function a Dagster asset, written once for every stage.

`@drop_stage(...)` is `@asset` partitioned by drop. The body gets the drop's name (`drop`) besides the
context, config and resources it names, and returns an `Outcome`: the stage's key, its metadata and the
results of its in-step checks. The key becomes the asset's data version (domain/record.py), so automation
follows real changes of every asset; a stage's one-line `StudioError` becomes a Dagster Failure with that line.
This is the one place that maps a run to its drop: a run that carries several drops changes it here.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

from dagster import AssetCheckResult, AssetExecutionContext, DataVersion, Failure, MaterializeResult, asset

from .domain.errors import StudioError
from .partitions import product_drops


@dataclass
class Outcome:
    key: str  # what the stage's outputs depend on (its data version)
    metadata: dict = field(default_factory=dict)
    checks: list[AssetCheckResult] = field(default_factory=list)


def drop_stage(**asset_args):
    """An asset with one partition per drop, from a body `(context, drop, **resources) -> Outcome`."""

    def decorate(body):
        signature = inspect.signature(body)
        params = [p for name, p in signature.parameters.items() if name != "drop"]

        @functools.wraps(body)
        def step(context: AssetExecutionContext, *args, **kwargs) -> MaterializeResult:
            try:
                out = body(context, context.partition_key, *args, **kwargs)
            except StudioError as e:
                raise Failure(description=str(e)) from e
            return MaterializeResult(data_version=DataVersion(out.key), check_results=out.checks or None,
                                     metadata={**out.metadata, "inputs_key": out.key})

        # What Dagster sees: the parameters it injects (no `drop`), returning a MaterializeResult.
        step.__signature__ = signature.replace(parameters=params, return_annotation=MaterializeResult)
        step.__annotations__ = {**{k: v for k, v in body.__annotations__.items() if k != "drop"},
                                "return": MaterializeResult}
        return asset(partitions_def=product_drops, **asset_args)(step)

    return decorate
