"""Scheduled refreshes over every known drop; crons come from the environment at load time.

Only what must happen on a clock is a cron here. `reference_images` instead uses declarative
automation (FOLLOWS_ITS_INPUTS in assets_pkg/stages/references/asset.py): it follows its inputs (the drop's
Milvus rows and its briefs) whenever they change, which a cron would either miss or repeat for nothing. Campaign images stay on a cron
because each generated image is billed: a weekly run bounds the spend, and unchanged briefs are
not generated again anyway.
"""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from assets_pkg.assets import product_drops
from assets_pkg.domain.settings import setting
from assets_pkg.domain.plan import batches
from assets_pkg.partitions import drops_request

from .jobs import refresh_catalog_job, regenerate_campaigns_job

REFRESH_CATALOG_CRON = setting("REFRESH_CATALOG_CRON")
REGENERATE_CAMPAIGNS_CRON = setting("REGENERATE_CAMPAIGNS_CRON")


def _every_drop(context: ScheduleEvaluationContext, label: str) -> list[RunRequest]:
    """Every known drop, in runs of DROP_BATCH drops."""
    drops = list(context.instance.get_dynamic_partitions(product_drops.name))
    stamp = context.scheduled_execution_time.isoformat()
    return [drops_request(run, run_key=f"{label}:{run[0]}:{stamp}", tags={"trigger": label})
            for run in batches(drops, drops, setting("DROP_BATCH"))]


@schedule(
    job=refresh_catalog_job,
    cron_schedule=REFRESH_CATALOG_CRON,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Refresh embeddings and Milvus rows of every drop (cheap when nothing changed).",
)
def nightly_catalog_refresh(context: ScheduleEvaluationContext):
    return _every_drop(context, "nightly catalog refresh")


@schedule(
    job=regenerate_campaigns_job,
    cron_schedule=REGENERATE_CAMPAIGNS_CRON,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Regenerate campaign images of every drop; briefs whose inputs are unchanged are skipped.",
)
def weekly_campaign_refresh(context: ScheduleEvaluationContext):
    return _every_drop(context, "weekly campaign refresh")
