"""Discovery of product drops: new folders become partitions, changed folders get a refresh run (many at once
go out in runs of DROP_BATCH drops); a failed run of several drops is split; and the automation sensor that
lets `reference_images` follow its inputs."""

import json

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    run_failure_sensor,
    sensor,
)

from assets_pkg.assets import product_drops
from assets_pkg.domain.artifacts import digest
from assets_pkg.domain.plan import ModelStep, after_failure, batches, model_step
from assets_pkg.partitions import drops_request, run_drops
from assets_pkg.stage import failed_drops
from assets_pkg.domain.drops import drop_fingerprints
from assets_pkg.domain.errors import StudioError
from assets_pkg.domain.settings import setting
from assets_pkg.resources import ClipModel, DropLibrary, ImageGeneratorResource, MilvusResource, search_models

from assets_pkg.domain.reviews import Reviews

from .jobs import (
    collect_campaign_images_job,
    drop_graph_job,
    ingest_drop_job,
    publish_selects_job,
    rebuild_for_model_job,
    refresh_catalog_job,
    regenerate_campaigns_job,
    search_references_job,
    switch_search_model_job,
)

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
                "files or briefs were added, replaced or removed gets one for that drop alone. Many at once "
                "(onboarding, a bulk upload) go out in runs of DROP_BATCH drops. No billed generation: "
                "campaign images wait for the weekly schedule or a click.",
)
def drop_folder_sensor(context: SensorEvaluationContext, library: DropLibrary) -> SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    seen: dict[str, str] = cursor.get("drops", {})
    known = set(context.instance.get_dynamic_partitions(product_drops.name))
    try:
        listing, current = drop_fingerprints(library.get("drops_dir"))
    except StudioError as e:
        # A failed tick, not "no drops": the cursor is kept, and no drop is reported gone.
        context.log.error(str(e))
        raise
    materialized = context.instance.get_materialized_partitions(AssetKey("product_image_collection"))

    reasons = {}
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
            reasons[name] = reason
            context.log.info(f"{name}: {reason}, requesting a run")

    new = sorted(set(current) - known)
    order = [*context.instance.get_dynamic_partitions(product_drops.name), *new]
    requests = [
        drops_request(run, run_key=f"{run[0]}..{run[-1]}:{digest([current[d] for d in run])}",
                      tags={"trigger": ", ".join(sorted({reasons[d] for d in run}))})
        for run in batches(order, reasons, setting("DROP_BATCH"))
    ]

    for bad in listing.invalid:
        context.log.warning(f"folder {bad!r} in {library.get('drops_dir')} is not a valid drop name; skipped")
    gone = sorted(known - set(current))
    for name in sorted(set(gone) - set(cursor.get("gone", []))):
        context.log.warning(
            f"drop folder {name!r} is gone; its partition and Milvus rows are kept. "
            f"To delete them: drop-studio drops remove {name}"
        )

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
        job = generator.waiting_batch_job(library.artifacts(drop))
        if job:
            waiting[drop] = job
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


@sensor(
    job=publish_selects_job,
    minimum_interval_seconds=setting("REVIEW_SENSOR_INTERVAL_S"),
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches the review decisions under ARTIFACTS_DIR: a drop whose decisions changed (approve, "
                "reject, clear) gets a run of campaign_selects, which publishes its approved images.",
)
def campaign_reviews(context: SensorEvaluationContext, library: DropLibrary) -> SensorResult:
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    now: dict[str, str] = {}
    requests = []
    for drop in context.instance.get_dynamic_partitions(product_drops.name):
        reviews = Reviews(library.artifacts(drop))
        if drop not in seen and not reviews.names():
            continue  # never reviewed
        now[drop] = reviews.fingerprint()
        if seen.get(drop) != now[drop]:
            context.log.info(f"{drop}: review decisions changed, publishing its selects")
            requests.append(RunRequest(partition_key=drop, run_key=f"{drop}:reviews:{now[drop]}",
                                       tags={"drop": drop, "trigger": "review decisions changed"}))
    return SensorResult(run_requests=requests, cursor=json.dumps(now, sort_keys=True),
                        skip_reason=None if requests else "no review decisions changed")


@sensor(
    jobs=[rebuild_for_model_job, switch_search_model_job, search_references_job],
    minimum_interval_seconds=setting("DROP_SENSOR_INTERVAL_S"),
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches CLIP_MODEL: when it names another model than the one search answers from, every drop "
                "gets a rebuild_for_model run (in runs of DROP_BATCH drops; the gpu pool embeds one at a time); "
                "once every drop is built, a switch_search_model run moves search to the new model in one "
                "step (MODEL_SWITCH=manual: you do), and each drop's references are searched again with it.",
)
def model_changes(context: SensorEvaluationContext, library: DropLibrary, milvus: MilvusResource,
                  clip: ClipModel) -> SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    models = search_models(library, milvus)
    if models.serving is not None:
        clip.use_in(models)  # CLIP_MODEL as the daemon sees it: begins (or calls off) a change of model
    drops = list(context.instance.get_dynamic_partitions(product_drops.name))
    step = model_step(models.facts(drops, manual=setting("MODEL_SWITCH") == "manual"), drops,
                      setting("DROP_BATCH"), cursor)
    if step.action in ("rebuild", "switch", "search_again"):
        context.log.info(step.reason)
    requests = model_requests(step, models.serving.id if models.serving else None,
                              models.target.id if models.target else None, models.transition)
    return SensorResult(run_requests=requests, cursor=json.dumps(step.done),
                        skip_reason=None if requests else step.reason)


def model_requests(step: ModelStep, serving: str | None, target: str | None, transition: str | None) -> list:
    """The runs a step of domain/plan.model_step asks for, as the daemon launches them."""
    if step.action == "rebuild":
        return [drops_request(run, run_key=f"model:{step.done['rebuilt']}:{run[0]}..{run[-1]}",
                              job_name=rebuild_for_model_job.name, tags={"trigger": f"model changed to {target}"})
                for run in step.runs]
    if step.action == "switch":
        return [RunRequest(run_key=f"switch:{transition}", job_name=switch_search_model_job.name,
                           tags={"trigger": f"every drop built for {target}"})]
    if step.action == "search_again":
        return [drops_request(run, run_key=f"references:{step.done['searched']}:{run[0]}..{run[-1]}",
                              job_name=search_references_job.name, tags={"trigger": f"search moved to {serving}"})
                for run in step.runs]
    return []


SPLIT_JOBS = [ingest_drop_job, refresh_catalog_job, regenerate_campaigns_job, drop_graph_job,
              collect_campaign_images_job, rebuild_for_model_job, search_references_job]


@run_failure_sensor(
    request_jobs=SPLIT_JOBS,
    default_status=DefaultSensorStatus.RUNNING,
    description="A failed run of several drops is split: each drop that failed runs again alone (where it "
                "fails with its own error), the others again as a batch (their finished stages are kept).",
)
def batch_split(context: RunFailureSensorContext):
    run = context.dagster_run
    span = run_drops(run.tags)
    if span is None:
        return  # a run of one drop: Dagster's own retry settings apply
    order = list(context.instance.get_dynamic_partitions(product_drops.name))
    if span[0] not in order or span[1] not in order:
        return  # a drop of the range was removed since
    drops = order[order.index(span[0]):order.index(span[1]) + 1]
    failed = failed_drops(context.get_step_failure_events(), drops)
    own_job = run.job_name in {j.name for j in SPLIT_JOBS}
    job, selection = (run.job_name, None) if own_job else (drop_graph_job.name, list(run.asset_selection or []))
    context.log.info(f"run {run.run_id} of {len(drops)} drops failed; running {', '.join(failed)} alone "
                     f"and {len(drops) - len(failed)} other drop(s) again")
    for part in after_failure(drops, failed, setting("DROP_BATCH")):
        yield drops_request(part, run_key=f"split:{run.run_id}:{part[0]}", job_name=job,
                            asset_selection=selection or None,
                            tags={"trigger": f"split from failed run {run.run_id[:8]}"})
