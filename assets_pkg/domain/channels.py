"""Where a published image goes: each placement's aspect ratio, exact pixels, minimum size, format and largest
file, in one table. A brand adds or overrides placements in `channels.yaml` (in DROPS_DIR for every drop, or
in a drop for that drop; the drop's wins), checked strictly: a bad entry is one line naming the file, the
entry and the field.

    meta-feed:            # override a field of a built-in channel
      max_kb: 4000
    shop-banner:          # or add one
      size: 1600x500
      format: jpeg
      max_kb: 800

Sizes are exact: a rendition is scaled to cover the size and cropped to it (never stretched). A channel's
aspect ratio is its size's; the image model is asked for the nearest ratio it offers (image_models.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import storage
from .errors import StudioError
from .storage import AnyPath

FILE = "channels.yaml"
CHANNEL_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"
FOCUS = ("center", "top", "bottom", "left", "right")
MAX_UPSCALE = 1.5  # beyond this a rendition is not published: it would show the model's pixels blown up
KB = 1024


class ChannelError(StudioError):
    """A channels.yaml entry, or a brief's channel, that cannot be used."""


@dataclass(frozen=True)
class Channel:
    name: str
    width: int
    height: int
    min_width: int = 1
    min_height: int = 1
    format: str = "jpeg"  # jpeg or png
    max_bytes: Optional[int] = None
    safe_top: int = 0  # px kept clear of the product (a story's UI covers them)
    safe_bottom: int = 0

    @property
    def ratio(self) -> float:
        return self.width / self.height

    @property
    def extension(self) -> str:
        return "jpg" if self.format == "jpeg" else "png"

    def to_dict(self) -> dict:
        return {"size": f"{self.width}x{self.height}", "min": f"{self.min_width}x{self.min_height}",
                "format": self.format, "max_bytes": self.max_bytes, "safe_top": self.safe_top,
                "safe_bottom": self.safe_bottom}


CHANNELS: dict[str, Channel] = {c.name: c for c in (
    Channel("meta-feed", 1080, 1350, min_width=600),
    Channel("meta-square", 1080, 1080, min_width=600),
    Channel("meta-story", 1080, 1920, min_width=600, safe_top=250, safe_bottom=340),
    Channel("pmax-landscape", 1200, 628, 600, 314, max_bytes=5120 * KB),
    Channel("pmax-square", 1200, 1200, 300, 300, max_bytes=5120 * KB),
    Channel("pmax-portrait", 960, 1200, 480, 600, max_bytes=5120 * KB),
    Channel("merchant", 1500, 1500, 500, 500, max_bytes=16 * KB * KB),
)}

SIZE_RE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")


class ChannelEntry(BaseModel):
    """One entry of channels.yaml: every field optional for an override, `size` required for a new one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    size: Optional[str] = Field(default=None, pattern=SIZE_RE.pattern)
    min: Optional[str] = Field(default=None, pattern=SIZE_RE.pattern)
    format: Optional[Literal["jpeg", "png"]] = None
    max_kb: Optional[int] = Field(default=None, ge=1, le=1024 * 1024)
    safe_top: Optional[int] = Field(default=None, ge=0)
    safe_bottom: Optional[int] = Field(default=None, ge=0)


def _pixels(text: str) -> tuple[int, int]:
    w, h = SIZE_RE.match(text).groups()
    return int(w), int(h)


def _entry(path: AnyPath, name, raw, known: dict[str, Channel]) -> Channel:
    where = f"{path}: channel {name!r}"
    if not isinstance(name, str) or not re.match(CHANNEL_NAME, name):
        raise ChannelError(f"{where}: a channel name is 1-40 lowercase letters, digits or '-'")
    if not isinstance(raw, dict):
        raise ChannelError(f"{where}: expected its fields (size, min, format, max_kb, safe_top, safe_bottom), "
                           f"got {raw!r}")
    try:
        entry = ChannelEntry(**{k: v for k, v in raw.items()})
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "?"
        hint = {"size": "WIDTHxHEIGHT in pixels, like 1080x1350", "min": "WIDTHxHEIGHT in pixels",
                "format": "jpeg or png", "max_kb": "an integer number of KB"}.get(field, first["msg"])
        raise ChannelError(f"{where}: field {field!r}: {hint}, got {raw.get(field)!r}") from None
    base = known.get(name)
    if base is None and entry.size is None:
        raise ChannelError(f"{where}: field 'size' is missing (a new channel needs WIDTHxHEIGHT)")
    width, height = _pixels(entry.size) if entry.size else (base.width, base.height)
    min_w, min_h = _pixels(entry.min) if entry.min else ((base.min_width, base.min_height) if base else (1, 1))
    channel = replace(base or Channel(name, width, height), width=width, height=height, min_width=min_w,
                      min_height=min_h)
    if entry.format:
        channel = replace(channel, format=entry.format)
    if entry.max_kb is not None:
        channel = replace(channel, max_bytes=entry.max_kb * KB)
    for side in ("safe_top", "safe_bottom"):
        if getattr(entry, side) is not None:
            channel = replace(channel, **{side: getattr(entry, side)})
    if min_w > width or min_h > height:
        raise ChannelError(f"{where}: field 'min': {min_w}x{min_h} is larger than its size {width}x{height}")
    if channel.safe_top + channel.safe_bottom >= height:
        raise ChannelError(f"{where}: fields 'safe_top' and 'safe_bottom' leave nothing of its {height} px")
    return channel


def read_channels_file(path: AnyPath, known: dict[str, Channel]) -> dict[str, Channel]:
    """`known` with the entries of one channels.yaml applied (none when the file is absent)."""
    try:
        text = storage.read_text(path)
    except FileNotFoundError:
        return dict(known)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ChannelError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if doc is None:
        return dict(known)
    if not isinstance(doc, dict):
        raise ChannelError(f"{path}: expected a mapping of channel names to their fields")
    out = dict(known)
    for name, raw in doc.items():
        out[name] = _entry(path, name, raw, known)
    return out


def channels_for(drops_dir: AnyPath | None, drop_folder: AnyPath | None) -> dict[str, Channel]:
    """The channels a drop's briefs may name: the table, DROPS_DIR's channels.yaml, then the drop's."""
    table = dict(CHANNELS)
    for folder in (drops_dir, drop_folder):
        if folder is not None:
            table = read_channels_file(folder / FILE, table)
    return table


def ratio_value(ratio: str) -> float:
    w, h = (int(v) for v in ratio.split(":"))
    return w / h


def nearest_ratio(channel: Channel, offered: tuple[str, ...]) -> str:
    """The aspect ratio of those a model offers that is nearest to the channel's (on a log scale, so 2:1 is as
    far from 1:1 as 1:2). A rendition is cut from an image at that ratio."""
    return min(offered, key=lambda r: (abs(math.log(ratio_value(r) / channel.ratio)), r))


def cover_scale(channel: Channel, width: int, height: int) -> float:
    """How much an image of width x height is enlarged to cover the channel (<= 1: only ever shrunk)."""
    return max(channel.width / width, channel.height / height)


def requests_for(channels: list[Channel], offered_ratios: tuple[str, ...], offered_sizes: tuple[str, ...]) \
        -> dict[str, str]:
    """aspect ratio -> image size: one request per distinct ratio the channels need (the nearest the model
    offers), at the smallest size it offers whose image covers every channel of that ratio without
    enlarging, else its largest (the renditions then say they were upscaled, up to MAX_UPSCALE)."""
    from .image_models import SIZE_PIXELS, output_size

    by_ratio: dict[str, list[Channel]] = {}
    for channel in channels:
        by_ratio.setdefault(nearest_ratio(channel, offered_ratios), []).append(channel)
    sizes = sorted(offered_sizes, key=lambda s: SIZE_PIXELS[s])
    plan = {}
    for ratio, group in by_ratio.items():
        plan[ratio] = next((s for s in sizes if all(cover_scale(c, *output_size(ratio, s)) <= 1 for c in group)),
                           sizes[-1])
    return plan
