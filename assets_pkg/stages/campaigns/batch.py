"""GEMINI_MODE=batch: one Batch API job per run, recorded in campaign-batch.json before it is awaited, found
again by its display name if the run dies before recording it, and collected by a later run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence


from ...domain import storage, upgrade
from ...domain.artifacts import digest, read_json, write_json
from .generation import Generation
from ...domain.storage import AnyPath
from .budget import check_budget
from .outputs import CampaignOutputs, CampaignReport
from .requests import ImageRequest, reference_paths


@dataclass
class BatchRecord:
    """A Batch API job a drop is waiting on, written before the job is submitted (so a run that dies in
    between finds it again by its display name) and completed with the job's name once it exists."""

    display_name: str
    requests: list[dict]  # [{stem, key, brief, variant}] in the job's order
    job: str | None = None
    submitted_at: float = field(default_factory=time.time)

    @classmethod
    def load(cls, path: AnyPath) -> "BatchRecord | None":
        doc = read_json(path)
        return cls(**doc) if doc else None

    def save(self, path: AnyPath) -> None:
        write_json(path, self.__dict__)


def batch_display_name(drop: str, requests: Sequence[ImageRequest]) -> str:
    key = digest(sorted(r.job_key for r in requests), 16)
    return f"drop-studio/{drop}/{key}"


def run_batch(gen, outputs: CampaignOutputs, record_path: AnyPath, drop: str, drop_folder: AnyPath,
              todo: list[ImageRequest], price: Callable[[str], float | None], cap: float | None,
              report: CampaignReport, log: Callable[[str], None] = lambda m: None) -> str | None:
    """GEMINI_MODE=batch, without a step waiting for hours: collect the drop's finished job if there is one,
    then submit what is still needed as one new job (unless one is still running). The job is recorded
    before it is submitted and found again by its display name, so a run that dies after submitting never
    submits the same requests twice. Returns the name of the job the drop now waits on, if any."""
    record = BatchRecord.load(record_path)
    if record is not None and record.job is None:
        record.job = gen.find_batch(record.display_name)
        if record.job is None:  # the submission never reached the API
            storage.remove(record_path)
            record = None
        else:
            log(f"found batch job {record.job} ({record.display_name}) submitted by a run that stopped")
            record.save(record_path)
    if record is not None:
        state, results = gen.batch_results(record.job)
        in_job = {r["key"] for r in record.requests}
        wanted = {r.job_key: r for r in todo}
        if any(":" not in k for k in in_job):  # a job an earlier release submitted, under its keys
            wanted |= {upgrade.previous_generation_key(r.brief, gen.name, gen.model,
                                                       [x["sha256"] for x in r.references], r.variant): r for r in todo}
        submitted = {r.job_key for k, r in wanted.items() if k in in_job}
        if results is None:
            report.pending = len(submitted)
            log(f"batch job {record.job} is {state}: {report.pending} image(s) pending; the campaign_batches "
                f"sensor collects them when it finishes")
            return record.job
        for item in record.requests:
            req = wanted.get(item["key"])
            if req is None:
                log(f"{item['stem']}: its brief changed after {record.job} was submitted; that result is dropped")
                continue
            result = results.get(item["key"]) or Generation(req.brief.id, gen.name, gen.model, None,
                                                            text=f"batch job ended {state}",
                                                            finish_reason=f"BATCH_{state.removeprefix('JOB_STATE_')}")
            cost = price(req.brief.image_size) if result.png is not None else 0.0
            outputs.record(req, result, drop, "batch", cost, None, report, log, spent_now=False)
        storage.remove(record_path)
        log(f"collected batch job {record.job} ({state})")
        todo = [r for r in todo if r.job_key not in submitted]
    if not todo:
        return None
    check_budget(todo, price, cap, gen.model, "batch")  # over the cap: nothing is submitted
    for req in todo:  # the spend this run commits to, billed when the job runs
        report.spend(req, price(req.brief.image_size))
    requests = gen.batch_requests([(r.job_key, r.brief, reference_paths(drop_folder, r), r.edit) for r in todo])
    record = BatchRecord(batch_display_name(drop, todo),
                         [{"stem": r.stem, "key": r.job_key, "brief": r.brief.id, "variant": r.variant} for r in todo])
    record.save(record_path)
    record.job = gen.submit_batch(requests, record.display_name)
    record.save(record_path)
    report.requests += len(todo)
    report.pending = len(todo)
    log(f"submitted batch job {record.job}: {len(todo)} image(s); results come back within 24 h")
    return record.job
