"""A channel's rendition of an approved image: scaled to cover the channel's exact size and cropped to it
around the subject (never stretched), then encoded under the channel's file-size limit.

An image short of a channel is enlarged at most MAX_UPSCALE times (Lanczos) and says `upscaled`; beyond
that, and when no quality fits the limit, the rendition is refused with one line saying why.
"""

from __future__ import annotations

import io
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
    # The part of the source the channel shows, in source pixels, resampled straight to the channel's size:
    # nothing outside it is resized only to be cropped away.
    view_w, view_h = min(w, channel.width / scale), min(h, channel.height / scale)
    spare_x, spare_y = w - view_w, h - view_h
    left = {"left": 0.0, "right": spare_x}.get(focus, spare_x / 2)
    top = {"top": 0.0, "bottom": spare_y}.get(focus, spare_y / 2)
    image = source.convert("RGB") if channel.format == "jpeg" and source.mode != "RGB" else source
    out = image.resize((channel.width, channel.height), Image.LANCZOS, box=(left, top, left + view_w, top + view_h))
    return Cut(out, scale)


def encode(image: Image.Image, channel: Channel, quality: int | None = None) -> bytes:
    buf = io.BytesIO()
    if channel.format == "jpeg":
        # No `optimize`: its second pass saves about 6% of the bytes for a third of the time, and every
        # channel's limit is far above a photo at this size.
        image.save(buf, "JPEG", quality=quality or JPEG_QUALITIES[0])
    else:
        image.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def qualities(channel: Channel) -> tuple[int | None, ...]:
    """The encodings to try, best first (a PNG has one)."""
    return JPEG_QUALITIES if channel.format == "jpeg" else (None,)
