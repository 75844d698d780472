"""Review on the search page: decisions on a drop's campaign images (or on one channel's rendition of one),
and revisions of them by the image model.

A decision is one file written once (domain/reviews.py), so the desk only checks what it is given and caches
what it has read. A revision is a Dagster run of `campaign_images` (and `campaign_image_index`, so the new
image is searchable and its thumbnail can be served) for the drop, in this process through the CLI's runner
(instance.run_drops) with the page's resources, and recorded in the instance at DAGSTER_HOME like the CLI's
runs: the UI's runs and the asset's materializations show it.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Callable
from urllib.parse import urlencode

from cachetools import LRUCache

from ..domain import storage
from ..domain.artifacts import DropArtifacts, read_json
from ..domain.channels import Channel
from ..domain.errors import StudioError
from ..domain.reviews import (MAX_NOTE_CHARS, MAX_REVIEWER_CHARS, Decision, InvalidDecision, Reviews, image_stem,
                              plain_text, subject)
from ..stages.campaigns.logic import campaign_dir
from ..stages.campaigns.requests import Revision
from .params import BadRequest

IMAGE_PATH_RE = re.compile(r"campaign/[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\.png")
DECISION_FILES_KEPT = 100_000  # parsed decision files (a few hundred bytes each)


class RevisionFailed(StudioError):
    """The revision's run failed; the message is its one line (over the cap, refused by the model, ...)."""


def _bad(e: InvalidDecision) -> BadRequest:
    field, _, message = str(e).partition(": ")
    return BadRequest(field, message)


def run_revision(drop: str, revision: Revision, resources: dict | None = None) -> str:
    """Run campaign_images (and the campaign index) for `drop` with `revision`, through the CLI's in-process
    runner (instance.run_drops) with `resources` (the page's: its CLIP weights are not loaded again); the
    revised image's path."""
    from ..assets import campaign_image_index, campaign_images, product_drops
    from ..instance import open_instance, run_drops
    from ..resources import build_resources
    from ..run_results import asset_metadata, failure

    instance = open_instance()
    if drop not in instance.get_dynamic_partitions(product_drops.name):
        instance.add_dynamic_partitions(product_drops.name, [drop])
    result = run_drops(
        [drop], resources or build_resources(), instance, selection=[campaign_images, campaign_image_index],
        tags={"trigger": "revision", "revision/parent": revision.parent, "revision/note": revision.note,
              "revision/reviewer": revision.reviewer},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}},
                    "ops": {"campaign_images": {"config": {"revise": revision.parent, "note": revision.note,
                                                           "reviewer": revision.reviewer}}}},
    )
    why = failure(result, drop)
    if why:
        raise RevisionFailed(why.removeprefix("campaign_images: "))
    return asset_metadata(result, "campaign_images", drop)["revision"]


def rendition_view(drop: str, path: str, name: str, channel: Channel | None, standing: dict[str, Decision],
                   history: dict[str, list[Decision]]) -> dict:
    """One channel's rendition of a campaign image as the page shows it: its pixels and safe zones, a preview
    of its cut (/api/rendition), and the decision on it alone."""
    said = standing.get(subject(path, name))
    return {"channel": name, **({"width": channel.width, "height": channel.height, "safe_top": channel.safe_top,
                                 "safe_bottom": channel.safe_bottom} if channel else {}),
            "preview": "/api/rendition?" + urlencode({"drop": drop, "path": path, "channel": name}),
            "review": said and {k: getattr(said, k) for k in ("decision", "note", "reviewer", "time")},
            "history": [d.to_dict() for d in history.get(subject(path, name), [])]}


class ReviewDesk:
    """Decisions and revisions for `drop-studio serve`."""

    def __init__(self, artifacts_dir: str, revise: Callable[[str, Revision], str] = run_revision):
        self.artifacts_dir = artifacts_dir
        self._revise = revise
        self._files = LRUCache(maxsize=DECISION_FILES_KEPT)  # path -> decision: the files never change
        self._revising: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _art(self, drop: str) -> DropArtifacts:
        return DropArtifacts.at(self.artifacts_dir, drop)

    def check_image(self, drop: str, path) -> str:
        """`path` names a campaign image of the drop (`campaign/<brief>.png`, `campaign/<brief>.v2.png`)."""
        if not isinstance(path, str) or not path:
            raise BadRequest("path", "missing; name a campaign image as campaign/<brief>.png")
        if not IMAGE_PATH_RE.fullmatch(path) or not storage.exists(campaign_dir(self._art(drop)) / path[len("campaign/"):]):
            raise BadRequest("path", f"no campaign image {path[:100]!r} in drop {drop!r}")
        return path

    def check_channel(self, drop: str, image: str, channel) -> str:
        """`channel` is one its brief names (a decision on that rendition alone), or empty (on the image)."""
        if channel in (None, ""):
            return ""
        named = (read_json(campaign_dir(self._art(drop)) / f"{image_stem(image)}.json", {}) or {}) \
            .get("brief", {}).get("channels") or []
        if channel not in named:
            raise BadRequest("channel", f"{image} has no rendition for {str(channel)[:50]!r}; its brief names "
                                        f"{', '.join(named) or 'no channels'}")
        return channel

    def decide(self, drop: str, body: dict) -> Decision:
        image = self.check_image(drop, body.get("path"))
        channel = self.check_channel(drop, image, body.get("channel"))
        try:
            return Reviews(self._art(drop)).record(image, body.get("decision"), body.get("note") or "",
                                                   body.get("reviewer"), channel)
        except InvalidDecision as e:
            raise _bad(e) from None

    def history(self, drop: str) -> dict[str, list[Decision]]:
        def read(path) -> dict:
            doc = self._files.get(str(path))
            if doc is None:
                doc = self._files[str(path)] = json.loads(storage.read_text(path))
            return doc

        return Reviews(self._art(drop)).history(read)

    def revise(self, drop: str, body: dict) -> str:
        """The revised image's path once it exists: made now, or made before from this image and note."""
        image = self.check_image(drop, body.get("path"))
        try:
            note = plain_text("note", body.get("note"), MAX_NOTE_CHARS, required=True)
            reviewer = plain_text("reviewer", body.get("reviewer"), MAX_REVIEWER_CHARS)
        except InvalidDecision as e:
            raise _bad(e) from None
        with self._lock:
            lock = self._revising.setdefault(drop, threading.Lock())
        with lock:  # one revision of a drop at a time: each takes the brief's next variant number
            return self._revise(drop, Revision(image, note, reviewer))
