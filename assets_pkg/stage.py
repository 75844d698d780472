"""What makes a stage's function a Dagster asset, written once for every stage.

`@drop_stage(...)` is `@asset` partitioned by drop. The body gets the drop's name (`drop`) besides the
context, config and resources it names, and returns an `Outcome`: the stage's key, its metadata and the
results of its in-step checks. The key becomes the asset's data version (domain/record.py), so automation
follows real changes of every asset; a stage's one-line `StudioError` becomes a Dagster Failure with that line.

A run may carry several drops (a partition range: the drop sensor's batches, a backfill from the UI under
the assets' BackfillPolicy). The step then calls the body once per drop, so the model is loaded once for all
of them, and reports each drop as if it had run alone: its own metadata and check results on its own
partition. A drop whose body fails does not stop the others in the step: they are finished and recorded on
disk first, then the step fails naming the drops that failed (`failed_drops`), and the `batch_split` sensor
runs each of those alone and the rest as a batch again, where their finished stages are kept by their keys.
Dagster records one data version per step (dagster-io/dagster#34013), so a batched step's data version is
the digest of its drops' keys; each drop's own key is its `inputs_key` metadata.
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)

from .domain.errors import StudioError
from .domain.record import inputs_key
from .domain.settings import setting
from .partitions import product_drops

# A backfill from the UI goes out in runs of DROP_BATCH drops; the drop sensor and the schedules batch alike.
BATCH_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=setting("DROP_BATCH"))


@dataclass
class Outcome:
    key: str  # what the stage's outputs depend on (its data version)
    metadata: dict = field(default_factory=dict)
    checks: list[AssetCheckResult] = field(default_factory=list)


class BatchProgress:
    """Log lines for a step over many drops: drops done, images per second, time left."""

    def __init__(self, log, stage: str, total: int):
        self.log, self.stage, self.total = log, stage, total
        self.start, self.done, self.images = time.monotonic(), 0, 0

    def drop_done(self, drop: str, metadata: dict) -> None:
        self.done += 1
        self.images += int(metadata.get("dagster/row_count") or 0)
        spent = time.monotonic() - self.start
        left = spent / self.done * (self.total - self.done)
        self.log.info(f"{self.stage}: {self.done}/{self.total} drops done ({drop}), "
                      f"{self.images / spent if spent else 0:.1f} images/s, about {left:.0f} s left")


def _evaluation(context: AssetExecutionContext, result: AssetCheckResult, drop: str) -> AssetCheckEvaluation:
    """A check result of one drop of a batched step, on that drop's partition."""
    spec = next(s for s in context.assets_def.check_specs if s.name == result.check_name)
    return AssetCheckEvaluation(asset_key=spec.asset_key, check_name=spec.name, passed=result.passed,
                                metadata=result.metadata, severity=result.severity,
                                description=result.description, blocking=spec.blocking, partition=drop)


def failed_drops_line(failed: dict[str, str], total: int) -> str:
    """What the UI shows of a failed batch step; each drop's own line travels as `failed_drops` metadata."""
    return f"{len(failed)} of {total} drops failed: " + "; ".join(f"{d}: {e}" for d, e in failed.items())


def failed_drops_metadata(failed: dict[str, str]) -> dict:
    """drop -> its own one-line error, as the step's failure metadata: read back as it was written."""
    return {"failed_drops": MetadataValue.json(dict(sorted(failed.items())))}


def failed_drops(step_failures, drops: list[str]) -> list[str]:
    """The drops of a failed run that failed themselves, from its step-failure events (the `failed_drops`
    their steps named: drop -> line; runs of earlier releases named a list); all of them when a failure names
    none (no stage put it on a drop)."""
    named: set[str] = set()
    for event in step_failures:
        user = event.step_failure_data.user_failure_data
        value = user.metadata.get("failed_drops") if user is not None else None
        if value is None:
            return list(drops)
        named |= set(value.value)
    return [d for d in drops if d in named] or list(drops)


def drop_stage(**asset_args):
    """An asset with one partition per drop, from a body `(context, drop, **resources) -> Outcome`."""

    def decorate(body):
        signature = inspect.signature(body)
        params = [p for name, p in signature.parameters.items() if name != "drop"]

        def one(context, drop, args, kwargs) -> Outcome:
            try:
                return body(context, drop, *args, **kwargs)
            except StudioError as e:
                raise Failure(description=str(e), metadata=failed_drops_metadata({drop: str(e)})) from e

        @functools.wraps(body)
        def step(context: AssetExecutionContext, *args, **kwargs):
            drops = context.partition_keys
            if len(drops) == 1:
                out = one(context, drops[0], args, kwargs)
                yield MaterializeResult(data_version=DataVersion(out.key), check_results=out.checks or None,
                                        metadata={**out.metadata, "inputs_key": out.key})
                return
            progress = BatchProgress(context.log, context.asset_key.to_user_string(), len(drops))
            keys, failed, evaluations = {}, {}, []
            for drop in drops:
                try:
                    out = body(context, drop, *args, **kwargs)
                except StudioError as e:
                    failed[drop] = str(e)
                    context.log.error(f"{drop}: {e}")
                    continue
                keys[drop] = out.key
                context.add_asset_metadata({**out.metadata, "inputs_key": out.key}, partition_key=drop)
                evaluations += [_evaluation(context, r, drop) for r in out.checks]
                progress.drop_done(drop, out.metadata)
            if failed:
                raise Failure(description=failed_drops_line(failed, len(drops)), metadata=failed_drops_metadata(failed))
            yield from evaluations
            yield MaterializeResult(data_version=DataVersion(inputs_key(drops=keys)))
            for name in context.assets_def.check_specs_by_output_name:  # the checks' results went out above
                yield Output(None, output_name=name)

        # What Dagster sees: the parameters it injects (no `drop`).
        step.__signature__ = signature.replace(parameters=params, return_annotation=inspect.Signature.empty)
        step.__annotations__ = {k: v for k, v in body.__annotations__.items() if k not in ("drop", "return")}
        return asset(partitions_def=product_drops, backfill_policy=BATCH_POLICY, **asset_args)(step)

    return decorate
