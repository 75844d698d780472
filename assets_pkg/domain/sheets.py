"""Contact sheets: grids of thumbnails with captions, for people to look at."""

from __future__ import annotations

import base64
import io
import textwrap
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .drops import load_rgb

Item = tuple[object, str]  # (a PIL image, a path or a URL; its caption)


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _thumb(src, side: int) -> Image.Image:
    try:
        img = src.convert("RGB") if isinstance(src, Image.Image) else load_rgb(src)
    except Exception:
        img = Image.new("RGB", (side, side), (235, 235, 235))
    img.thumbnail((side, side))
    return img


def contact_sheet(items: Sequence[Item], thumb: int = 160, cols: int = 6, title: str | None = None) -> Image.Image:
    """Thumbnails in a grid, each with a one-line caption; `title` across the top (one line per line of it)."""
    cols = max(1, min(cols, len(items) or 1))
    rows = max(1, -(-len(items) // cols))
    cap_h, pad = 18, 8
    top = 8 + 22 * len(title.splitlines()) if title else 0
    sheet = Image.new("RGB", (cols * (thumb + pad) + pad, top + rows * (thumb + cap_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    small, big = font(12), font(16)
    if title:
        draw.multiline_text((pad, 7), title, fill=(20, 20, 20), font=big, spacing=6)
    for k, (src, caption) in enumerate(items):
        r, c = divmod(k, cols)
        x, y = pad + c * (thumb + pad), top + pad + r * (thumb + cap_h + pad)
        img = _thumb(src, thumb)
        sheet.paste(img, (x + (thumb - img.width) // 2, y + (thumb - img.height) // 2))
        label = caption if len(caption) <= thumb // 7 else caption[: thumb // 7 - 1] + "…"
        draw.text((x, y + thumb + 3), label, fill=(60, 60, 60), font=small)
    if not items:
        draw.text((pad, top + pad), "(nothing to show)", fill=(120, 120, 120), font=small)
    return sheet


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def to_jpeg(img: Image.Image, max_side: int = 900, quality: int = 80) -> bytes:
    img = img.convert("RGB")
    img.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def markdown_image(img: Image.Image, alt: str, max_side: int = 900) -> str:
    """A Markdown image with the picture inline (the Dagster UI renders data URIs)."""
    data = base64.b64encode(to_jpeg(img, max_side)).decode()
    return f"![{alt}](data:image/jpeg;base64,{data})"
