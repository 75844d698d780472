"""Which runs to make: the decisions the daemon's sensors and `drop-studio run` share, as pure functions of
the facts each sees (no Dagster, no I/O). Each driver gathers the facts, asks here, and makes the runs it is
told: the sensors as run requests, the CLI as in-process runs.

- `batches`: drops in runs of at most DROP_BATCH neighbours, in the partitions' order;
- `after_failure`: a failed run of several drops again, each drop that failed alone, the others together;
- `model_step`: during and after a change of CLIP_MODEL, whether to build drops for the new model, switch
  search to it, or search every brief's references again with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def batches(order: list[str], wanted, size: int) -> list[list[str]]:
    """`wanted` drops in runs of at most `size`, each a range of neighbours in `order` (the partitions' order)."""
    wanted = set(wanted)
    out: list[list[str]] = []
    run: list[str] = []
    for name in order:
        if name in wanted and len(run) < size:
            run.append(name)
            continue
        if run:
            out.append(run)
        run = [name] if name in wanted else []
    return out + [run] if run else out


def after_failure(drops: list[str], failed: list[str], size: int) -> list[list[str]]:
    """The runs that follow a failed run of `drops`: none for a run of one drop (it failed with its own error),
    else each drop that `failed` alone and the others in batches of neighbours (their finished stages are
    kept). A failure that names no drop names them all, so each then runs alone."""
    if len(drops) <= 1:
        return []
    failed = [d for d in drops if d in failed] or list(drops)
    return [[d] for d in failed] + batches(drops, set(drops) - set(failed), size)


@dataclass(frozen=True)
class ModelFacts:
    """What a change of the search model is at: ids as in domain/search_models.py."""

    serving: str | None  # the model search answers from (None: nothing built yet)
    target: str | None = None  # the model CLIP_MODEL names, while it differs from the serving one
    transition: str | None = None  # the id of that change
    waiting: tuple[str, ...] = ()  # drops the serving model has and the target not yet
    switched: str | None = None  # the id of the latest switch of search, once it moved at least once
    manual: bool = False  # MODEL_SWITCH=manual: a person switches


@dataclass(frozen=True)
class ModelStep:
    """What to do next: `rebuild` (build `runs` for the target), `switch`, `search_again` (`runs` with the
    serving model), or `wait` / `nothing` (with the reason). `done` is what the driver records as done, so the
    same step is not made twice (the sensor's cursor)."""

    action: str
    reason: str
    runs: list[list[str]] = field(default_factory=list)
    done: dict = field(default_factory=dict)


def model_step(facts: ModelFacts, drops: list[str], size: int, done: dict) -> ModelStep:
    """The next step of a change of model. `done`: what was recorded as done ({"rebuilt": transition,
    "searched": switch}); a driver that builds the drops itself (the CLI's runs do) records "rebuilt"."""
    if facts.serving is None:
        return ModelStep("nothing", "no model has built a collection yet")
    if facts.transition:
        if done.get("rebuilt") != facts.transition:
            return ModelStep("rebuild", f"CLIP_MODEL is {facts.target}; building its collection for {len(drops)} "
                             f"drop(s) while search answers from {facts.serving}", batches(drops, drops, size),
                             {**done, "rebuilt": facts.transition})
        if facts.waiting:
            return ModelStep("wait", f"search answers from {facts.serving}; {len(drops) - len(facts.waiting)} of "
                             f"{len(drops)} drops built for {facts.target}", done=done)
        if facts.manual:
            return ModelStep("wait", f"every drop is built for {facts.target}; search stays on {facts.serving} "
                             f"until you materialize search_model or run `drop-studio models switch` "
                             f"(MODEL_SWITCH=manual)", done=done)
        return ModelStep("switch", f"every drop is built for {facts.target}: switching search to it", done=done)
    if facts.switched and done.get("searched") != facts.switched:
        return ModelStep("search_again", f"search moved to {facts.serving}; searching every brief's references "
                         f"with it", batches(drops, drops, size), {**done, "searched": facts.switched})
    return ModelStep("nothing", f"search answers from {facts.serving}", done=done)
