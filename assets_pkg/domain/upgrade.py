"""What earlier releases left, taken as it is: their keys, their files and the one-model layout, in one place.

Each step runs for a drop at most once and records that it did in the drop's `upgrade.json` (step -> when);
the stages know one key each and ask here only when their own key misses, while the step is still pending:
a world of today never gets past that check, and a world of an earlier release is adopted the first time
each stage meets it, with nothing encoded, searched or billed again.

- `references`: the release before product catalogs keyed a drop's references by the whole brief;
- `campaigns`: the same release keyed each campaign image by the whole brief (`previous_generation_key`),
  and a Batch API job it submitted knows its requests by those keys;
- `first_model`: before models could change, one model's rows were in MILVUS_COLLECTION and its files in
  the drop folders, with no models state: that model is the first one, and serves;
- a manifest from before files had versions (`manifest_without_versions`).

The collection's own schema (before the product fields) is upgraded where its connection is, in
store/upgrade.py, the first time it is opened for writing.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .artifacts import DropArtifacts, digest, read_json

RECORD = "upgrade.json"
STEPS = ("references", "campaigns")

# The fields of a brief before products and filters existed.
PREVIOUS_BRIEF_FIELDS = ("id", "prompt", "query", "top_k", "aspect_ratio", "image_size", "variants")


def pending(art: DropArtifacts, step: str) -> bool:
    """Whether `step` has not yet run for the drop."""
    return step not in art.read_json(RECORD, {})


def done(art: DropArtifacts, step: str) -> None:
    record = art.read_json(RECORD, {})
    if step not in record:
        art.write_json(RECORD, {**record, step: datetime.now(timezone.utc).isoformat(timespec="seconds")})


def _uses_what_the_previous_release_lacked(brief) -> bool:
    return bool(brief.products or brief.where or brief.query is None)


def previous_references_key(briefs: list, rows: dict) -> str | None:
    """The key the release before catalogs gave a drop's references (it hashed the whole brief) for the same
    briefs and rows; None when a brief uses what that release did not have."""
    if any(_uses_what_the_previous_release_lacked(b) for b in briefs):
        return None
    return digest({"briefs": [{k: getattr(b, k) for k in PREVIOUS_BRIEF_FIELDS} for b in briefs], "rows": rows})


def adopt_references(art: DropArtifacts, record, briefs: list, rows: dict, key: str, intact) -> bool:
    """Once per drop, when the references' own key missed: references that release searched for the same
    briefs and rows are kept under `key`. Returns whether they were."""
    if not pending(art, "references"):
        return False
    previous = previous_references_key(briefs, rows)
    adopted = previous is not None and record.kept(previous, intact) is not None
    if adopted:
        record.write(key)
    done(art, "references")
    return adopted


def previous_generation_key(brief, generator: str, model: str | None, reference_hashes: list[str],
                            variant: int) -> str | None:
    """The key that release gave a campaign image (it hashed the whole brief); None for a brief that uses
    what it did not have."""
    if _uses_what_the_previous_release_lacked(brief) or brief.base_image:
        return None
    old_brief = {k: getattr(brief, k) for k in ("id", "prompt", "query", "top_k", "aspect_ratio", "image_size")}
    return digest({"brief": old_brief, "generator": generator, "model": model, "references": reference_hashes,
                   "variant": variant}, 64)


def first_model(state: dict, root, base: str, drops: list[str], record_name: str, register) -> None:
    """The one-model layout, on the first write of the models state (there was none): the model whose
    record names MILVUS_COLLECTION in the drop folders is the first one, and serves. `register(state,
    model, spec, fit)` adds it (its weights' spec is filled in by the first run that uses it)."""
    for drop in drops:
        record = read_json(root / drop / record_name, {})
        if record.get("collection") == base and record.get("model_id"):
            model = record["model_id"]
            register(state, model, "", "crop" if model.endswith("+crop") else "pad")
            state["serving"] = model
            state["history"].append({"serving": model, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     "adopted": True})
            return


def manifest_without_versions(images, columns: list[str]):
    """A manifest from before `version` existed: its files are read once more by the next scan, their
    vectors reused."""
    return images.reindex(columns=columns).fillna({"version": ""})
