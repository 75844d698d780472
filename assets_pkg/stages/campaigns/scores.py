"""Each campaign image checked before a person looks, by the model search answers from:

- `product_fidelity`: the image's cosine similarity to each product reference it was made from; per
  product (a SKU, or a picture without one) the best of its pictures; and the weakest of the products the
  brief named (all its references' products when it names none): the one a person should look at;
- `prompt_match`: its similarity to its brief's prompt, and the nearest other brief's prompt of the drop.

A candidate is flagged when its weakest product is less like its photos than the drop's product pictures
are like one another (their median pairwise similarity, from the vectors already stored), or when another
brief's prompt matches it better than its own. SCORE_FIDELITY_MIN and SCORE_PROMPT_MIN replace either rule
with a fixed value.

Scores live in the serving model's files of the drop (`scores.json`), each image's under a key of exactly
what they depend on (its bytes, the model, its references' bytes, its brief's prompt and the drop's other
prompts): an unchanged image is never scored again, and after a change of model each is scored once, the
next time campaign_images runs. Each image's sidecar gets its scores too (`scores`, with the model), so the
PNG and its JSON carry them wherever they are copied; what the sidecar records of the request is left as it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow.parquet as pq

from ...domain import listing, storage
from ...domain.artifacts import DropArtifacts, digest, read_json, write_json
from ...domain.storage import write_atomic
from ...domain.errors import StudioError
from ...domain.settings import setting
from ..embeddings.logic import read_vectors, vectors_table
from .outputs import CampaignOutputs

if TYPE_CHECKING:
    from ...domain.encoder import ClipEncoder

FILE = "scores.json"
# The images' vectors, by content: the campaign index of the same model takes them from here instead of
# encoding the images a second time.
VECTORS = "campaign-vectors.parquet"
MEDIAN_SAMPLE = 1500  # product pictures the median pairwise similarity is taken over (every pair of a sample)


@dataclass(frozen=True)
class Thresholds:
    fidelity_min: float | None = None  # None: the drop's median pairwise similarity of product pictures
    prompt_min: float | None = None  # None: its own prompt must be the nearest of the drop's

    @classmethod
    def from_settings(cls) -> "Thresholds":
        def number(name: str) -> float | None:
            raw = setting(name)
            if raw in (None, ""):
                return None
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if not -1.0 <= value <= 1.0:
                raise StudioError(f"{name}={raw!r}: a cosine similarity from -1 to 1, or unset for the drop's own rule")
            return value

        return cls(number("SCORE_FIDELITY_MIN"), number("SCORE_PROMPT_MIN"))


def median_similarity(vectors: np.ndarray) -> float | None:
    """The median cosine similarity of pairs of the drop's product pictures (unit vectors): how alike its
    pictures are to one another, whatever the model. Over a fixed sample for a large drop."""
    if len(vectors) < 2:
        return None
    if len(vectors) > MEDIAN_SAMPLE:
        vectors = vectors[np.random.default_rng(0).choice(len(vectors), MEDIAN_SAMPLE, replace=False)]
    sims = vectors @ vectors.T
    return float(np.median(sims[np.triu_indices(len(vectors), 1)]))


def score_key(sha256: str, model_id: str, sidecar: dict, prompts: dict[str, str]) -> str:
    brief = sidecar.get("brief", {})
    return digest({"image": sha256, "model": model_id, "brief": brief.get("id"), "products": brief.get("products"),
                   "references": [(r.get("path"), r.get("sha256"), r.get("sku")) for r in sidecar.get("references", [])],
                   "prompts": prompts})


def score_image(vector: np.ndarray, sidecar: dict, references: dict[str, np.ndarray],
                prompts: dict[str, np.ndarray]) -> dict:
    """The image's scores: `references` maps a reference picture's sha256 to its vector, `prompts` each
    brief of the drop to its prompt's vector."""
    brief = sidecar.get("brief", {})
    per_ref = [{"path": r["path"], "sku": r.get("sku") or "", "similarity": round(float(vector @ references[r["sha256"]]), 4)}
               for r in sidecar.get("references", []) if r.get("sha256") in references]
    products: dict[str, dict] = {}
    for r in per_ref:
        name = r["sku"] or r["path"]
        if name not in products or r["similarity"] > products[name]["similarity"]:
            products[name] = {"product": name, "path": r["path"], "similarity": r["similarity"]}
    named = [p for p in brief.get("products") or [] if p in products]
    weakest = min((products[p] for p in named) if named else products.values(), key=lambda p: p["similarity"],
                  default=None)
    own = brief.get("id")
    match = {b: round(float(vector @ v), 4) for b, v in prompts.items()}
    others = {b: s for b, s in match.items() if b != own}
    nearest = max(others.items(), key=lambda kv: kv[1], default=None)
    return {
        "product_fidelity": {"references": per_ref, "weakest": weakest},
        "prompt_match": {"similarity": match.get(own), "nearest_other": nearest and {"brief": nearest[0], "similarity": nearest[1]},
                         "own_prompt_nearest": nearest is None or match.get(own, -2) >= nearest[1]},
    }


def reasons(scores: dict, median: float | None, limits: Thresholds) -> list[str]:
    """Why a candidate is flagged (none: it is not)."""
    out = []
    weakest = scores["product_fidelity"]["weakest"]
    floor = limits.fidelity_min if limits.fidelity_min is not None else median
    if weakest and floor is not None and weakest["similarity"] < floor:
        rule = "SCORE_FIDELITY_MIN" if limits.fidelity_min is not None else "the drop's pictures' median likeness"
        out.append(f"{weakest['product']} looks least like its photos: {weakest['similarity']:.3f}, under "
                   f"{floor:.3f} ({rule})")
    match = scores["prompt_match"]
    if match["similarity"] is not None and limits.prompt_min is not None:
        if match["similarity"] < limits.prompt_min:
            out.append(f"its prompt matches at {match['similarity']:.3f}, under SCORE_PROMPT_MIN {limits.prompt_min:.3f}")
    elif not match["own_prompt_nearest"]:
        other = match["nearest_other"]
        out.append(f"closer to brief {other['brief']!r}'s prompt ({other['similarity']:.3f}) than to its own "
                   f"({match['similarity']:.3f})")
    return out


def summary(scores: dict) -> dict:
    """An image's scores in a line: its weakest product and that product's likeness, and its prompt match
    (what the asset's table, the manifest and the page show)."""
    weakest = scores["product_fidelity"]["weakest"] or {}
    return {"weakest_product": weakest.get("product", ""), "product_fidelity": weakest.get("similarity"),
            "prompt_match": scores["prompt_match"]["similarity"],
            "own_prompt_nearest": scores["prompt_match"]["own_prompt_nearest"]}


def flagged(stored: dict, limits: Thresholds) -> dict[str, list[str]]:
    """image -> why it is flagged, for a drop's stored scores (read_scores)."""
    return {image: why for image, s in (stored.get("images") or {}).items()
            if (why := reasons(s, stored.get("median"), limits))}


@dataclass
class ScoreReport:
    scores: dict[str, dict] = field(default_factory=dict)  # campaign/<stem>.png -> its scores
    scored: list[str] = field(default_factory=list)  # scored in this run
    median: float | None = None
    flagged: dict[str, list[str]] = field(default_factory=dict)  # image -> reasons

    def table(self) -> list[dict]:
        """One row per image, weakest first: what the asset's metadata and the page show."""
        rows = [{"image": image, **summary(s), "flagged": "; ".join(self.flagged.get(image, []))}
                for image, s in self.scores.items()]
        return sorted(rows, key=lambda r: (r["product_fidelity"] if r["product_fidelity"] is not None else 2, r["image"]))


def read_scores(files: DropArtifacts) -> dict:
    return read_json(files / FILE, {}) or {}


def read_image_vectors(files: DropArtifacts) -> dict[str, np.ndarray]:
    """sha256 -> the vector campaign_images encoded that image with (this model's files)."""
    try:
        return dict(zip(*read_vectors(files / VECTORS)))
    except FileNotFoundError:
        return {}


def _write_image_vectors(files: DropArtifacts, vectors: dict[str, np.ndarray]) -> None:
    shas = sorted(vectors)
    table = vectors_table(shas, np.stack([vectors[s] for s in shas]))
    write_atomic(files / VECTORS, lambda tmp: pq.write_table(table, tmp))


def _stem(image: str) -> str:
    return image.removeprefix("campaign/").removesuffix(".png")


def _to_sidecar(outputs: CampaignOutputs, image: str, sidecar: dict | None, model_id: str, scores: dict) -> bool:
    """Write an image's scores into its sidecar (read here when None); False when it has none."""
    sidecar = read_json(outputs.sidecar(_stem(image)), {}) if sidecar is None else sidecar
    if not sidecar:
        return False
    write_json(outputs.sidecar(_stem(image)), {**sidecar, "scores": {
        "model": model_id, "product_fidelity": scores["product_fidelity"], "prompt_match": scores["prompt_match"]}})
    return True


def score_campaign_images(outputs: CampaignOutputs, stems: list[str], prompts: dict[str, str], model_id: str,
                          files: DropArtifacts, product_vectors: Callable[[], tuple[list[str], np.ndarray]],
                          vectors_version: str, load_encoder: Callable[[], "ClipEncoder"],
                          limits: Thresholds) -> ScoreReport:
    """Scores for the drop's campaign images (`stems`), computed for those whose key changed, in the serving
    model's `files`. `product_vectors()`: the drop's (sha256 list, vectors), read only when something is
    scored or `vectors_version` (what the stored vectors are) changed. An unchanged drop is one listing and
    one small read: no image, sidecar or vector is read. The images' vectors are kept (VECTORS) for the
    campaign index."""
    old = read_scores(files)
    same_model = old.get("model") == model_id
    kept = old.get("images", {}) if same_model else {}
    listed = {e.rel: e for e in listing.list_files(outputs.folder)}
    prompts_key = digest(prompts)
    report = ScoreReport()
    todo, current = [], {}
    for stem in stems:
        image = f"campaign/{stem}.png"
        png, side = listed.get(f"{stem}.png"), listed.get(f"{stem}.json")
        seen = [png.size, png.version, side.version if side else None] if png else None
        before = kept.get(image, {})
        if seen and before.get("files") == seen and old.get("prompts") == prompts_key:
            current[image] = before
            continue
        data = storage.read_bytes(outputs.png(stem))
        sidecar = read_json(outputs.sidecar(stem), {}) or {}
        key = score_key(hashlib.sha256(data).hexdigest(), model_id, sidecar, prompts)
        if before.get("key") == key:
            current[image] = {**before, "files": seen}
        else:
            todo.append((image, stem, sidecar, key, seen, hashlib.sha256(data).hexdigest()))
    fresh = todo or not same_model or old.get("median_of") != vectors_version
    sha, vectors = product_vectors() if stems and fresh else ([], None)
    report.median = median_similarity(vectors) if vectors is not None else old.get("median")
    if todo:
        encoder = load_encoder()
        batch = encoder.embed_images([outputs.png(t[1]) for t in todo])
        by_sha = dict(zip(sha, vectors))
        names = sorted(prompts)
        prompt_vectors = dict(zip(names, encoder.embed_texts([prompts[b] for b in names]))) if names else {}
        made = {}
        for i, vector in zip(batch.indices, batch.vectors):
            image, stem, sidecar, key, seen, sha256 = todo[i]
            current[image] = {"key": key, "files": seen, "sha256": sha256,
                              **score_image(vector, sidecar, by_sha, prompt_vectors)}
            _to_sidecar(outputs, image, sidecar, model_id, current[image])
            report.scored.append(image)
            made[sha256] = vector
        wanted = {s.get("sha256") for s in current.values()}
        _write_image_vectors(files, {**{k: v for k, v in read_image_vectors(files).items() if k in wanted}, **made})
    # An earlier release kept the scores out of the sidecars: they are copied there once, not computed again.
    copied = [] if old.get("sidecars") and same_model else \
        [image for image in current if image not in report.scored and _to_sidecar(outputs, image, None, model_id, current[image])]
    if report.scored or copied:  # sidecars just written: known by their new version
        rewritten = {e.rel: e.version for e in listing.list_files(outputs.folder)}
        for image in (*report.scored, *copied):
            current[image]["files"] = [*current[image]["files"][:2], rewritten.get(f"{_stem(image)}.json")]
    report.scores = dict(sorted(current.items()))
    report.flagged = flagged({"images": report.scores, "median": report.median}, limits)
    doc = {"model": model_id, "median": report.median, "median_of": vectors_version, "prompts": prompts_key,
           "images": report.scores, "sidecars": True}
    if stems and doc != old:
        files.write_json(FILE, doc)
    return report
