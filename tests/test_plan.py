"""domain/plan.py decides which runs to make; the daemon's sensors and `drop-studio run` only make them. Fed the
same facts, both drivers must make the same runs: a failed batch is split the same way, and a change of model
switches search and searches references again at the same step."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, build_run_status_sensor_context, materialize

from assets_pkg.cli.run import follow_model, run_all
from assets_pkg.domain.errors import StudioError
from assets_pkg.domain.plan import ModelFacts, after_failure, batches, model_step
from assets_pkg.partitions import RANGE_END_TAG, RANGE_START_TAG, run_drops
from assets_pkg.stage import Outcome, drop_stage
from orchestration.sensors import batch_split, model_requests

ORDER = ["a1", "b2", "c3", "d4", "e5"]


@pytest.mark.parametrize("drops, failed, size, runs", [
    (["a1"], ["a1"], 3, []),  # one drop failed with its own error: nothing to split
    (ORDER, ["c3"], 3, [["c3"], ["a1", "b2"], ["d4", "e5"]]),  # the others stay neighbours
    (ORDER, ["a1", "e5"], 2, [["a1"], ["e5"], ["b2", "c3"], ["d4"]]),
    (ORDER[:3], [], 3, [["a1"], ["b2"], ["c3"]]),  # a failure naming no drop: each alone tells which
    (ORDER[:3], ["zz"], 3, [["a1"], ["b2"], ["c3"]]),  # a drop not in the run names none of them
])
def test_after_failure_runs_each_failed_drop_alone_and_the_rest_in_batches_of_neighbours(drops, failed, size, runs):
    assert after_failure(drops, failed, size) == runs


def test_batches_are_ranges_of_neighbours_in_the_partitions_order():
    assert batches(ORDER, {"a1", "b2", "d4", "e5"}, 3) == [["a1", "b2"], ["d4", "e5"]]
    assert batches(ORDER, ORDER, 2) == [["a1", "b2"], ["c3", "d4"], ["e5"]]
    assert batches(ORDER, [], 2) == []


FAILING: set[str] = set()


@drop_stage()
def shaky(context, drop: str) -> Outcome:
    """A stage that fails on the drops in FAILING with its own line, as a bad products.csv would."""
    if drop in FAILING:
        raise StudioError(f"{drop}/products.csv:3: column 'sku' is empty")
    return Outcome(key=drop)


def make_run(instance, part: list[str]):
    one = {"partition_key": part[0]} if len(part) == 1 else {}
    tags = {} if one else {RANGE_START_TAG: part[0], RANGE_END_TAG: part[-1]}
    return materialize([shaky], instance=instance, raise_on_error=False, tags=tags, **one)


def request_drops(request) -> list[str]:
    if request.partition_key:
        return [request.partition_key]
    first, last = run_drops(request.tags)
    return ORDER[ORDER.index(first):ORDER.index(last) + 1]


@pytest.mark.parametrize("failing, size", [({"c3"}, 5), ({"a1", "d4"}, 2), ({"b2", "c3", "e5"}, 3), (set(), 2)])
def test_a_failed_batch_is_split_into_the_same_runs_by_the_cli_and_by_the_batch_split_sensor(
        failing, size, monkeypatch):
    monkeypatch.setenv("DROP_BATCH", str(size))
    FAILING.update(failing)
    try:
        first = batches(ORDER, ORDER, size)
        # The CLI: in-process runs, split by run_all.
        cli_instance = DagsterInstance.ephemeral()
        cli_instance.add_dynamic_partitions("product_drops", ORDER)
        cli_runs: list[tuple[list[str], bool]] = []

        def run_one(part):
            result = make_run(cli_instance, part)
            cli_runs.append((part, result.success))
            return result

        settled = run_all(run_one, first, size)
        assert {d for d, r in settled.items() if not r.success} == failing

        # The daemon: each failed run of several drops goes to the batch_split sensor, which asks for the next.
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("product_drops", ORDER)
        daemon_runs: list[list[str]] = []
        todo = list(first)
        while todo:
            part = todo.pop(0)
            result = make_run(instance, part)
            daemon_runs.append((part, result.success))
            if result.success:
                continue
            context = build_run_status_sensor_context(
                sensor_name="batch_split", dagster_event=result.get_run_failure_event(), dagster_instance=instance,
                dagster_run=result.dagster_run).for_run_failure()
            todo = [request_drops(r) for r in (batch_split(context) or [])] + todo
    finally:
        FAILING.clear()

    assert sorted(daemon_runs) == sorted(cli_runs)
    # Each failing drop ends in a failed run of its own; every other drop succeeds in exactly one run.
    for drop in failing:
        assert [r for r in cli_runs if drop in r[0]][-1] == ([drop], False)
    for drop in set(ORDER) - failing:
        assert sum(ok for part, ok in cli_runs if drop in part) == 1


def models_table():
    """(facts before, facts after a switch, the runs both drivers make)."""
    drops = ["a1", "b2", "c3"]
    changing = ModelFacts(serving="tiny", target="vit", transition="t1")
    switched = ModelFacts(serving="vit", switched="h2")
    return drops, [
        ("nothing built", ModelFacts(serving=None), None, []),
        ("one model, never switched", ModelFacts(serving="tiny"), None, []),
        ("a drop not built for the target yet", ModelFacts(**{**changing.__dict__, "waiting": ("c3",)}), None, []),
        ("every drop built, MODEL_SWITCH=manual", ModelFacts(**{**changing.__dict__, "manual": True}), None, []),
        ("every drop built", changing, switched, ["switch", ["a1", "b2"], ["c3"]]),
    ]


@pytest.mark.parametrize("row", range(5))
def test_a_change_of_model_switches_and_searches_again_at_the_same_step_in_the_cli_and_the_sensor(row):
    drops, table = models_table()
    name, before, after, expected = table[row]
    size = 2

    # The sensor: ticks after its rebuild runs finished (cursor "rebuilt"); a switch run changes the facts.
    made, cursor, facts = [], {"rebuilt": before.transition}, before
    for _ in range(3):
        step = model_step(facts, drops, size, cursor)
        requests = model_requests(step, facts.serving, facts.target, facts.transition)
        cursor = step.done
        for r in requests:
            if r.job_name == "switch_search_model":
                made.append("switch")
                facts = after
            else:
                assert r.job_name == "search_references"
                made.append(request_drops(r))
    made_by_cli = []

    class Models:
        """What follow_model reads of the model state: the same facts the sensor was given."""

        def __init__(self, facts):
            self._facts = facts
            self.target = facts.target and type("Entry", (), {"id": facts.target})
            self.serving = type("Entry", (), {"id": facts.serving})

        def facts(self, drops, manual):
            return self._facts

    current = {"facts": before}

    def switch():
        made_by_cli.append("switch")
        current["facts"] = after
        return True

    follow_model(lambda: Models(current["facts"]), switch, lambda runs: made_by_cli.extend(runs), drops, size,
                 manual=before.manual)
    assert made == made_by_cli == expected, name
