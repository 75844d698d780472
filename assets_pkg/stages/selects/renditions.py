"""A channel's rendition of an approved image: scaled to cover the channel's exact size and cropped to it
around the subject (never stretched), then encoded under the channel's file-size limit.

An image short of a channel is enlarged at most MAX_UPSCALE times (Lanczos) and says `upscaled`; beyond
that, and when no quality fits the limit, the rendition is refused with one line saying why.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

from ...domain.channels import FOCUS, MAX_UPSCALE, Channel, cover_scale

JPEG_QUALITIES = (90, 85, 80, 75, 70, 65, 60, 50, 40)  # tried in turn until the file fits its channel


class RenditionRefused(Exception):
    """Why a rendition is not published (one line)."""


@dataclass
class Cut:
    image: Image.Image
    scale: float  # > 1: enlarged

    @property
    def upscaled(self) -> bool:
        return self.scale > 1.0 + 1e-9


def cut(source: Image.Image, channel: Channel, focus: str = "center") -> Cut:
    """`source` scaled to cover `channel` and cropped to its exact size, keeping the `focus` side."""
    if focus not in FOCUS:
        raise ValueError(f"focus must be one of {', '.join(FOCUS)}")
    w, h = source.size
    scale = cover_scale(channel, w, h)
    if scale > MAX_UPSCALE:
        raise RenditionRefused(f"{channel.name}: the image is {w}x{h}; {channel.width}x{channel.height} would "
                               f"enlarge it {scale:.2f}x (at most {MAX_UPSCALE}x)")
    new = (max(channel.width, math.ceil(w * scale)), max(channel.height, math.ceil(h * scale)))
    image = source.convert("RGB") if channel.format == "jpeg" else source
    if new != (w, h):
        # reducing_gap: a box reduction first when shrinking a lot, then Lanczos (same look, a fraction of the time)
        image = image.resize(new, Image.LANCZOS, reducing_gap=3.0 if scale < 1 else None)
    spare_x, spare_y = new[0] - channel.width, new[1] - channel.height
    left = {"left": 0, "right": spare_x}.get(focus, spare_x // 2)
    top = {"top": 0, "bottom": spare_y}.get(focus, spare_y // 2)
    return Cut(image.crop((left, top, left + channel.width, top + channel.height)), scale)


def encode(image: Image.Image, channel: Channel, quality: int | None = None) -> bytes:
    buf = io.BytesIO()
    if channel.format == "jpeg":
        image.save(buf, "JPEG", quality=quality or JPEG_QUALITIES[0], optimize=True)
    else:
        image.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def qualities(channel: Channel) -> tuple[int | None, ...]:
    """The encodings to try, best first (a PNG has one)."""
    return JPEG_QUALITIES if channel.format == "jpeg" else (None,)
