"""A drop a run left with nothing to do, known without a run.

Every stage already knows when it has nothing to do (domain/record.py), but asking them costs a Dagster run:
imports, opening the instance, a run's own events (seconds). After a run that settled a drop (it succeeded,
no check failed at ERROR severity, nothing blocked or pending, no change of model under way), `drop-studio run` records the drop's *settled key*: a digest
of everything a later run of the drop reads, as cheaply as it can be seen without reading content:

- the drop's own listing (drop_fingerprint: its pictures, briefs, catalog), and its artifacts' listing
  (records, vectors, campaign images, review decisions), names, sizes and versions;
- the Milvus Lite files' fingerprints (any write to them, by any drop, changes them);
- every Drop Studio setting (a secret only by whether it is set), the CLIP weights file and the models'
  state, the published and shared base images' listings, and the code itself (its files' sizes and times).

A later `drop-studio run` whose key for the drop is the same answers from the recorded summary, without a
Dagster run. Where no such key can be known, there is none and the drop runs: a Milvus server (others may
write to it), a drop that keeps a store export (each run asks the store what changed).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from . import listing, storage
from .artifacts import DropArtifacts, digest
from .drops import ProductDrop, drop_fingerprint
from .milvus import campaign_uri, is_lite_uri, lite_fingerprint
from .settings import DEFAULTS, setting

RECORD = ".settled.json"  # hidden: the artifacts' listing in the key leaves it out
SECRETS = ("GEMINI_API_KEY", "MILVUS_TOKEN", "DROP_STUDIO_TOKEN", "GOOGLE_API_KEY")
# Read by the libraries a run uses, not by Drop Studio's settings.
OTHER_VARIABLES = ("GOOGLE_GEMINI_BASE_URL", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION", "AWS_ENDPOINT_URL",
                   "AWS_ENDPOINT_URL_S3", "STORAGE_EMULATOR_HOST")
CODE = Path(__file__).resolve().parents[2]


def _listing(folder) -> list[tuple]:
    if folder is None or not storage.is_folder(folder):
        return []
    return [(e.rel, e.size, e.version) for e in listing.list_files(folder)]


@functools.cache
def _code() -> str:
    """The code a run would execute: Drop Studio's own source files, by size and modification time (once a
    process: it is the same for every drop)."""
    found = []
    for package in ("assets_pkg", "orchestration"):
        for root, _, names in os.walk(CODE / package):
            for name in names:
                if name.endswith((".py", ".yaml")):
                    st = os.stat(os.path.join(root, name))
                    found.append((os.path.relpath(os.path.join(root, name), CODE), st.st_size, st.st_mtime_ns))
    return digest(sorted(found))


def _settings() -> dict:
    values = {name: (bool(os.environ.get(name)) if name in SECRETS else str(setting(name))) for name in DEFAULTS}
    return {**values, **{name: os.environ.get(name, "") for name in OTHER_VARIABLES},
            **{name: bool(os.environ.get(name)) for name in SECRETS if name not in DEFAULTS}}


def settled_key(drop: ProductDrop, art: DropArtifacts, models_state) -> str | None:
    """What a run of the drop would read, as a digest; None when that cannot be known without a run.
    `models_state`: the models' state file (domain/search_models.py)."""
    from .storefront.importer import export_of

    uri = str(setting("DROP_STUDIO_MILVUS_URI"))
    if not is_lite_uri(uri) or storage.is_remote(drop.folder) or export_of(drop.folder) is not None:
        return None
    model = str(setting("CLIP_MODEL"))
    publish = storage.location("PUBLISH_DIR", setting("PUBLISH_DIR")) / drop.name
    base = setting("BASE_IMAGES_DIR")
    return digest({
        "drop": drop_fingerprint(drop),
        "artifacts": _listing(art.root),
        "milvus": [lite_fingerprint(uri), lite_fingerprint(campaign_uri(uri))],
        "settings": _settings(),
        "weights": listing.version_of(Path(model)) if os.path.exists(model) else model,
        "models": listing.version_of(models_state),
        "published": _listing(publish),
        "base_images": _listing(storage.location("BASE_IMAGES_DIR", base)) if base else [],
        "code": _code(),
    })


def settled_summary(art: DropArtifacts, key: str | None) -> dict | None:
    """The summary the run that settled the drop printed, when the drop's key is still the one it recorded."""
    if key is None:
        return None
    record = art.read_json(RECORD, {})
    return record.get("summary") if record.get("key") == key else None


def record_settled(art: DropArtifacts, key: str | None, summary: dict) -> None:
    """Keep the summary of the run that settled the drop under its key; with no key, forget any earlier one."""
    if key is None:
        storage.remove(art / RECORD)
        return
    art.write_json(RECORD, {"key": key, "summary": summary})
