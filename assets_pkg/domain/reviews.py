"""People's decisions on a drop's campaign images: approve, reject (with a note) or clear; and on a single
channel's rendition of an image (a crop that cuts the product off is rejected without rejecting the image).

Each decision is its own small JSON file, written once and never changed:
`<artifacts>/<drop>/reviews/<image stem>@<time in ns>-<random>.json`. One atomic write records a decision,
nothing is read back and rewritten, so two reviewers deciding on the same image at once (two threads, two
processes, two servers on one bucket) both land in the history, and the latest file by name is the image's
decision. A `clear` is a decision too: it leaves the image undecided, and stays in the history. The files
lie in one folder, so the drop's decisions are one listing of names (no file is opened to list them).
"""

from __future__ import annotations

import json
import re
import secrets
import time
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from . import listing, storage
from .artifacts import DropArtifacts, digest
from .channels import CHANNEL_NAME
from .storage import AnyPath, write_atomic

DECISIONS = ("approve", "reject", "clear")
MAX_NOTE_CHARS = 1000
MAX_REVIEWER_CHARS = 80
FOLDER = "reviews"


class InvalidDecision(ValueError):
    """A decision's field is wrong; the message starts with the field's name."""


def plain_text(field: str, value, limit: int, required: bool = False) -> str:
    """`value` as plain text of at most `limit` characters: no control characters but line breaks and tabs."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidDecision(f"{field}: must be text, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise InvalidDecision(f"{field}: missing or empty")
    if len(value) > limit:
        raise InvalidDecision(f"{field}: {len(value)} characters; at most {limit}")
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c not in "\n\t"), None)
    if bad is not None:
        raise InvalidDecision(f"{field}: control character U+{ord(bad):04X} is not allowed in plain text")
    return value


@dataclass(frozen=True)
class Decision:
    image: str  # campaign/<stem>.png, as the API names campaign images
    decision: str  # approve, reject or clear
    note: str
    reviewer: str
    time: str  # ISO 8601, UTC
    id: str  # the file's name: orders decisions, the latest last
    channel: str = ""  # set: the decision is on that channel's rendition of the image only

    @property
    def subject(self) -> str:
        """What the decision is on: the image, or `<image>#<channel>` for one channel's rendition."""
        return subject(self.image, self.channel)

    def to_dict(self) -> dict:
        return asdict(self)


def subject(image: str, channel: str = "") -> str:
    return f"{image}#{channel}" if channel else image


def image_stem(image: str) -> str:
    """`campaign/red-hero.v2.png` -> `red-hero.v2`."""
    return image.rsplit("/", 1)[-1].removesuffix(".png")


class Reviews:
    """The decisions on one drop's campaign images, under its artifacts."""

    def __init__(self, art: DropArtifacts):
        self.folder: AnyPath = art / FOLDER

    def record(self, image: str, decision: str, note: str = "", reviewer: str = "", channel: str = "") -> Decision:
        """Write one decision (checked: `InvalidDecision` names the field) and return it; with `channel`, on
        that channel's rendition of the image only."""
        if channel and (not isinstance(channel, str) or not re.fullmatch(CHANNEL_NAME, channel)):
            raise InvalidDecision(f"channel: not a channel name: {str(channel)[:50]!r}")
        if decision not in DECISIONS:
            raise InvalidDecision(f"decision: must be one of {', '.join(DECISIONS)}, got {decision!r}")
        note = plain_text("note", note, MAX_NOTE_CHARS)
        reviewer = plain_text("reviewer", reviewer, MAX_REVIEWER_CHARS, required=True)
        now = time.time_ns()
        name = f"{now:020d}-{secrets.token_hex(4)}"
        made = Decision(image, decision, note, reviewer,
                        datetime.fromtimestamp(now / 1e9, timezone.utc).isoformat(timespec="milliseconds"), name,
                        channel)
        doc = made.to_dict()
        if not channel:
            del doc["channel"]  # an image's decision is written as it always was
        write_atomic(self.folder / f"{image_stem(image)}@{name}.json", json.dumps(doc).encode())
        return made

    def names(self) -> list[str]:
        """The decision files' names, sorted: per image, by time."""
        try:
            listed = listing.list_folders(self.folder)
        except FileNotFoundError:
            return []
        return [name for name, is_dir in listed if not is_dir and "@" in name and name.endswith(".json")]

    def history(self, read=None) -> dict[str, list[Decision]]:
        """subject (an image, or `<image>#<channel>`) -> its decisions, oldest first. `read(path) -> dict`
        reads one file (a cache may stand in: the files never change)."""
        read = read or (lambda path: json.loads(storage.read_text(path)))
        found: dict[str, list[Decision]] = {}
        for name in self.names():
            doc = read(self.folder / name)
            made = Decision(**doc)
            found.setdefault(made.subject, []).append(made)
        return found

    def fingerprint(self) -> str:
        """Changes exactly when a decision is added (or a file removed by hand)."""
        return digest(self.names())


def current(history: dict[str, list[Decision]]) -> dict[str, Decision]:
    """subject -> its standing decision (approve or reject); those last cleared are left out."""
    return {image: ds[-1] for image, ds in history.items() if ds and ds[-1].decision != "clear"}


def images_only(standing: dict[str, Decision]) -> dict[str, Decision]:
    """The standing decisions on whole images (not on one channel's rendition)."""
    return {k: d for k, d in standing.items() if not d.channel}
