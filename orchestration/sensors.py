"""Discovery of product drops: new folders become partitions, changed folders get a refresh run; and
the automation sensor that lets `reference_images` follow its inputs."""

import json

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets_pkg.assets import product_drops
from assets_pkg.domain.drops import discover_drops, drop_fingerprint
from assets_pkg.domain.errors import StudioError
from assets_pkg.domain.settings import setting
from assets_pkg.stages.campaigns.logic import BatchRecord, campaign_batch_path
from assets_pkg.resources import DropLibrary, ImageGeneratorResource

from .jobs import collect_campaign_images_job, ingest_drop_job

# Declared rather than left to Dagster's default automation sensor, which a fresh instance creates
# stopped: references must follow their inputs with nothing to switch on by hand.
references_follow_inputs = AutomationConditionSensorDefinition(
    "references_follow_inputs",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=setting("AUTOMATION_INTERVAL_S"),
    description="Evaluates the assets' automation conditions: reference_images re-runs for a drop whose "
                "Milvus rows or briefs changed in a run that did not search already.",
)


@sensor(
    job=ingest_drop_job,
    minimum_interval_seconds=setting("DROP_SENSOR_INTERVAL_S"),
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches DROPS_DIR: a new drop folder becomes a partition and gets an ingest run; a drop whose "
                "files or briefs were added, replaced or removed gets one for that drop alone. No billed "
                "generation: campaign images wait for the weekly schedule or a click.",
)
def drop_folder_sensor(context: SensorEvaluationContext, library: DropLibrary) -> SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen: dict[str, str] = cursor.get("drops", {})
    known = set(context.instance.get_dynamic_partitions(product_drops.name))
    try:
        listing = discover_drops(library.get("drops_dir"))
    except StudioError as e:
        # A failed tick, not "no drops": the cursor is kept, and no drop is reported gone.
        context.log.error(str(e))
        raise
    current = {d.name: drop_fingerprint(d) for d in listing.drops}
    materialized = context.instance.get_materialized_partitions(AssetKey("product_image_collection"))

    requests = []
    for name, fingerprint in current.items():
        if name not in known:
            reason = "new drop"
        elif name not in seen:
            # First look at a drop someone already ran (e.g. with the CLI): only run it if it never completed.
            reason = None if name in materialized else "not yet materialized"
        elif seen[name] != fingerprint:
            reason = "content changed"
        else:
            reason = None
        if reason:
            requests.append(
                RunRequest(
                    partition_key=name,
                    run_key=f"{name}:{fingerprint}",
                    tags={"drop": name, "trigger": reason},
                )
            )
            context.log.info(f"{name}: {reason}, requesting a run")

    for bad in listing.invalid:
        context.log.warning(f"folder {bad!r} in {library.get('drops_dir')} is not a valid drop name; skipped")
    gone = sorted(known - set(current))
    for name in sorted(set(gone) - set(cursor.get("gone", []))):
        context.log.warning(
            f"drop folder {name!r} is gone; its partition and Milvus rows are kept. "
            f"To delete them: drop-studio drops remove {name}"
        )

    new = sorted(set(current) - known)
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[product_drops.build_add_request(new)] if new else [],
        cursor=json.dumps({"drops": current, "gone": gone}, sort_keys=True),
        skip_reason=None if requests else "no new or changed drops",
    )


@sensor(
    job=collect_campaign_images_job,
    minimum_interval_seconds=setting("GEMINI_BATCH_POLL_S"),
    default_status=DefaultSensorStatus.RUNNING,
    description="GEMINI_MODE=batch: polls the Batch API jobs drops wait on and launches a run that collects "
                "a job's images once it has finished (no step sits idle while Google works).",
)
def campaign_batches(context: SensorEvaluationContext, library: DropLibrary,
                     generator: ImageGeneratorResource) -> SensorResult:
    waiting = {}
    for drop in sorted(context.instance.get_dynamic_partitions(product_drops.name)):
        record = BatchRecord.load(campaign_batch_path(library.artifacts(drop)))
        if record is not None and record.job:
            waiting[drop] = record.job
    if not waiting:
        return SensorResult(skip_reason="no drop waits on a batch job")
    if not generator.enabled:
        return SensorResult(skip_reason=f"{len(waiting)} batch job(s) recorded but no GEMINI_API_KEY to poll them")
    gen = generator.generator()
    requests = []
    for drop, job in waiting.items():
        state, done = gen.batch_state(job)
        if not done:
            context.log.info(f"{drop}: batch job {job} is {state}")
            continue
        context.log.info(f"{drop}: batch job {job} ended {state}; launching its collection")
        requests.append(RunRequest(partition_key=drop, run_key=f"{job}:collect",
                                   tags={"drop": drop, "trigger": "batch job finished", "gemini/batch_job": job}))
    return SensorResult(run_requests=requests,
                        skip_reason=None if requests else f"{len(waiting)} batch job(s) still running")
