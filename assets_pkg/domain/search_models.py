"""Which embedding model search answers from, and where each model's vectors and rows are kept.

Every model has its own Milvus collection and its own files in each drop, so two models' vectors never
meet in one collection, and going back to a model re-encodes nothing. The first model keeps
MILVUS_COLLECTION itself and the drop folder's own files (embeddings.parquet, collection.json,
campaign-index.json), where every release before models could change wrote them: an upgrade moves,
re-encodes and re-syncs nothing. Each later model gets `<MILVUS_COLLECTION>__<model key>` and
`<drop>/models/<model key>/`.

Search (the page, the CLI, the references of briefs) answers from the *serving* model. When CLIP_MODEL names
another model, that one becomes the *target*: runs build its collection drop by drop while search keeps
answering from the serving one, and once every drop the serving model has is built for the target,
`switch_if_ready` makes the target serve, in one write of the state file. (A Milvus alias would be the
server's way to switch in one step; Milvus Lite has no aliases.) A drop counts as built when its record
for the target names this transition, so a model built long ago and changed since is synced again (from
its stored vectors) before it serves.

State: `<ARTIFACTS_DIR>/_models/<MILVUS_COLLECTION>.json` (`_` starts no drop name).
"""

from __future__ import annotations

import copy
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock

from . import listing, storage, upgrade
from .artifacts import DropArtifacts, digest, read_json, write_json
from .plan import ModelFacts
from .storage import AnyPath

STATE_DIR = "_models"
MODELS_DIR = "models"  # in a drop's artifacts: one folder per model after the first
RECORD = "collection.json"  # the collection stage's record, in each model's files
CAMPAIGN_RECORD = "campaign-index.json"  # the campaign index stage's
READERS = 16  # records read at once when checking every drop (a request each in a bucket)


def model_key(model_id: str) -> str:
    """A short name of a model for folders and collections: letters, digits and `_`, with a hash so two ids
    never share one (`vit_b_32_3f2a9c1d`)."""
    slug = re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")[:40]
    return f"{slug}_{digest(model_id)[:8]}"


@dataclass(frozen=True)
class ModelEntry:
    id: str  # what made the vectors (model_id.embedding_id)
    spec: str  # the CLIP_MODEL value that loads it
    fit: str  # CLIP_FIT
    collection: str
    files_dir: str  # "" for the first model (the drop folder itself), else models/<key>

    def files(self, art: DropArtifacts) -> DropArtifacts:
        """The model's files in a drop's artifacts."""
        return DropArtifacts(art.root / self.files_dir) if self.files_dir else art

    def to_dict(self) -> dict:
        return {"spec": self.spec, "fit": self.fit, "collection": self.collection, "files": self.files_dir}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SearchModels:
    def __init__(self, artifacts_dir: str, base: str, state: dict):
        self.root = storage.location("ARTIFACTS_DIR", artifacts_dir)
        self.base = base
        self.state = state

    @staticmethod
    def path_of(artifacts_dir: str, base: str) -> AnyPath:
        return storage.location("ARTIFACTS_DIR", artifacts_dir) / STATE_DIR / f"{base}.json"

    @classmethod
    def load(cls, artifacts_dir: str, base: str) -> "SearchModels":
        """The state as its file holds it; reading never writes it (an earlier release's one model is
        adopted by the first change, under the lock: domain/upgrade.py)."""
        models = cls(artifacts_dir, base, {})
        models.state = models._read()
        return models

    def _read(self) -> dict:
        return read_json(self.path_of(str(self.root), self.base)) or {"models": {}, "serving": None, "target": None,
                                                                      "history": []}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock every change of the state is made under: a file beside the state (in a bucket, a local
        file named after its URL, which orders the writers of this machine)."""
        path = self.path_of(str(self.root), self.base)
        if storage.is_remote(path):
            lock = Path(tempfile.gettempdir()) / f"drop-studio-models-{digest(str(path))[:16]}.lock"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = path.with_name(path.name + ".lock")
        with FileLock(str(lock)):
            yield

    def change(self, apply: Callable[[dict], object]) -> object:
        """The one way the model state changes: under the lock, `apply` is given the state as the file holds
        it now, and what it made of it is written when it differs. Returns what `apply` returned."""
        with self._locked():
            held = read_json(self.path_of(str(self.root), self.base))
            first = held is None
            state = held or self._read()
            if first:  # the first write: an earlier release's one model is taken as the first one
                upgrade.first_model(state, self.root, self.base, self.drops(), RECORD,
                                    lambda state, model, spec, fit: _register(state, self.base, model, spec, fit, first=True))
            before = copy.deepcopy(state)
            result = apply(state)
            if state != before or first:
                write_json(self.path_of(str(self.root), self.base), state)
            self.state = state
        return result

    def drops(self) -> list[str]:
        """The drops that have artifacts (folders of ARTIFACTS_DIR; `_` starts no drop name)."""
        if not storage.exists(self.root):
            return []
        return sorted(name for name, is_dir in listing.list_folders(self.root) if is_dir and not name.startswith("_"))

    # -- models -------------------------------------------------------------
    def find(self, model: str) -> ModelEntry | None:
        """A known model by its id or by the CLIP_MODEL value it was loaded from."""
        if model in self.state["models"]:
            return self.entry(model)
        return next((m for m in self.models() if m.spec == model), None)

    def entry(self, model_id: str) -> ModelEntry:
        m = self.state["models"][model_id]
        return ModelEntry(model_id, m["spec"], m["fit"], m["collection"], m["files"])

    @property
    def serving(self) -> ModelEntry | None:
        return self.entry(self.state["serving"]) if self.state.get("serving") else None

    @property
    def target(self) -> ModelEntry | None:
        t = self.state.get("target")
        return self.entry(t["model"]) if t else None

    @property
    def transition(self) -> str | None:
        """The id of the current change of model: the same for every process that computes it (so concurrent
        runs agree), and new each time, since it counts the switches made before."""
        t = self.state.get("target")
        if not t:
            return None
        return digest({"from": self.state["serving"], "to": t["model"], "switches": len(self.state["history"])})

    def use(self, model_id: str, spec: str, fit: str) -> ModelEntry:
        """The model a run encodes with (CLIP_MODEL): registered, serving at once when nothing serves yet,
        else the target of a change (or no change, when it is the serving one). Written only when that
        changes the state (or the state was adopted and not yet written), through `change`."""
        trial = copy.deepcopy(self.state)
        _apply_use(trial, self.base, model_id, spec, fit)
        if trial != self.state or not storage.exists(self.path_of(str(self.root), self.base)):
            self.change(lambda state: _apply_use(state, self.base, model_id, spec, fit))
        return self.entry(model_id)

    def models(self) -> list[ModelEntry]:
        return [self.entry(m) for m in self.state["models"]]

    # -- the switch ---------------------------------------------------------
    def record(self, art: DropArtifacts, model: ModelEntry) -> dict:
        return model.files(art).read_json(RECORD, {})

    def progress(self, drops: list[str]) -> dict[str, dict]:
        """Per drop: the serving model's and the target's images in Milvus (None: never synced), and whether
        the drop is built for the current change."""
        serving, target, transition = self.serving, self.target, self.transition
        arts = [DropArtifacts(self.root / d) for d in drops]

        def facts(art: DropArtifacts) -> dict:
            have = self.record(art, serving).get("indexed") if serving else None
            if not target:
                return {"serving_images": have, "target_images": None, "built": False}
            t = self.record(art, target)
            # Campaign images count too, where the serving model has indexed some.
            campaigns = not serving or not serving.files(art).read_json(CAMPAIGN_RECORD, {}).get("indexed") \
                or target.files(art).read_json(CAMPAIGN_RECORD, {}).get("transition") == transition
            return {"serving_images": have, "target_images": t.get("indexed"),
                    "built": t.get("transition") == transition and campaigns}

        with ThreadPoolExecutor(max_workers=READERS) as pool:
            return dict(zip(drops, pool.map(facts, arts)))

    @staticmethod
    def waiting(progress: dict[str, dict]) -> list[str]:
        """The drops of a `progress` that hold up the switch: the serving model has them, the target not yet."""
        return [d for d, p in progress.items() if p["serving_images"] is not None and not p["built"]]

    def facts(self, drops: list[str], manual: bool) -> ModelFacts:
        """Where a change of model is, for domain/plan.model_step (the drops' records are read only during one)."""
        history = self.state["history"]
        return ModelFacts(
            serving=self.serving.id if self.serving else None, target=self.target.id if self.target else None,
            transition=self.transition, waiting=tuple(self.waiting(self.progress(drops))) if self.target else (),
            switched=digest(history) if len(history) > 1 else None, manual=manual)

    def switch_if_ready(self, drops: list[str]) -> tuple[bool, dict[str, dict]]:
        """Make the target serve when every drop the serving model has is built for it. Returns (whether it
        switched, `progress`). The drops are read outside the lock; the switch is made only if the state is
        still the one they were read for, else they are read again."""
        while True:
            progress = self.progress(drops)
            if self.target is None or self.waiting(progress):
                return False, progress
            read_for = (self.state["serving"], self.state["target"], len(self.state["history"]))

            def switch(state: dict) -> bool:
                if (state.get("serving"), state.get("target"), len(state["history"])) != read_for:
                    return False  # changed while the drops were read
                state["serving"], state["target"] = state["target"]["model"], None
                state["history"].append({"serving": state["serving"], "at": _now()})
                return True

            if self.change(switch):
                return True, progress


def _register(state: dict, base: str, model_id: str, spec: str, fit: str, first: bool = False) -> None:
    known = state["models"].get(model_id)
    if known is None:
        key = model_key(model_id)
        state["models"][model_id] = {"spec": spec, "fit": fit, "collection": base if first else f"{base}__{key}",
                                     "files": "" if first else f"{MODELS_DIR}/{key}"}
    elif spec:
        known["spec"] = spec  # where the weights are now (a checkpoint moved; the id is its content)


def _apply_use(state: dict, base: str, model_id: str, spec: str, fit: str) -> None:
    _register(state, base, model_id, spec, fit, first=not state["models"])
    if not state.get("serving"):
        state["serving"] = model_id
        state["history"].append({"serving": model_id, "at": _now()})
    elif model_id == state["serving"]:
        state["target"] = None  # set back before the change finished: the serving model stays
    elif (state.get("target") or {}).get("model") != model_id:
        state["target"] = {"model": model_id, "since": _now()}
