"""What a finished in-process run (`materialize`) says about one drop: why it failed, its checks, its metadata.
Shared by the CLI and the search page's revisions, which both run the graph in their own process."""

from __future__ import annotations


def failure(result, drop: str) -> str | None:
    """Why `drop` failed in this run (None: it did not): the line its stage said, or else the run's first error."""
    if result.success:
        return None
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        user = data.user_failure_data
        named = user.metadata.get("failed_drops") if user is not None else None
        if named is not None:
            if drop not in named.value:
                continue
            return f"{event.step_key}: {named.value[drop]}"  # the drop's own line (stage.failed_drops_metadata)
        if user is not None and user.description:
            return f"{event.step_key}: {user.description}"
        err = data.error
        while err is not None and err.cause is not None:  # the user's exception, not Dagster's wrapper
            err = err.cause
        msg = (err.message if err else "failed").strip().splitlines()
        return f"{event.step_key}: {msg[-1] if msg else 'failed'}"
    return "run failed"


def check_results(result, drop: str | None = None) -> dict[str, bool]:
    """Asset check name -> passed, for the checks a run evaluated (on `drop`'s partition, when given)."""
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and (drop is None or e.asset_check_evaluation_data.partition in (None, drop))
    }


def failed_error_checks(result, drop: str) -> list[str]:
    """The checks of `drop` that failed at ERROR severity (a WARN is advice for a person, e.g. the scores')."""
    return sorted(
        e.asset_check_evaluation_data.check_name for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.partition in (None, drop) and not e.asset_check_evaluation_data.passed
        and e.asset_check_evaluation_data.severity.value == "ERROR"
    )


def asset_metadata(result, asset: str, drop: str) -> dict:
    """The metadata of `asset`'s last materialization for `drop` in this run ({} when none)."""
    events = [m for m in result.asset_materializations_for_node(asset) if m.partition in (None, drop)]
    if not events:
        return {}
    return {k: getattr(v, "value", v) for k, v in events[-1].metadata.items()}
