"""The offline campaign board: a stand-in for an image model that lays the references and the prompt out
at the brief's aspect ratio and size, so the whole graph runs without an API key."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw

from ...domain.drops import load_rgb
from ...domain.image_models import output_size
from ...domain.sheets import font, wrap
from ..briefs.logic import Brief
from .generation import Edit, Generation, Reference, png_bytes


class BoardGenerator:
    """Offline stand-in for an image model: lays the references and the prompt
    out as a campaign board, so the whole graph runs without an API key."""

    name = "offline-board"
    model = None

    def generate(self, brief: Brief, references: Sequence[Reference], edit: Edit | None = None) -> Generation:
        if edit is not None:
            return self._edit(brief, references, edit)
        W, H = output_size(brief.aspect_ratio, brief.image_size)
        board = Image.new("RGB", (W, H), (248, 246, 240))
        d = ImageDraw.Draw(board)
        margin = W // 24
        d.text((margin, margin), f"Campaign board: {brief.id}", fill=(25, 25, 25), font=font(max(18, W // 32)))
        prompt_font = font(max(14, W // 52))
        d.multiline_text((margin, margin + W // 16), wrap(brief.prompt, 60), fill=(55, 55, 55), font=prompt_font,
                         spacing=4)
        top = margin + W // 16 + 5 * max(14, W // 52) + 20
        n = max(1, len(references))
        cell_w = (W - margin * (n + 1)) // n
        cell_h = H - top - margin - 30
        side = max(16, min(cell_w, cell_h))
        for k, ref in enumerate(references):
            try:
                img = load_rgb(ref.path)
            except Exception:
                continue
            scale = side / max(img.width, img.height)  # fill the cell, small pictures too
            img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
            x = margin + k * (cell_w + margin) + (cell_w - img.width) // 2
            board.paste(img, (x, top))
            d.text((x, top + img.height + 6), ref.label, fill=(90, 90, 90),
                   font=font(max(12, W // 70)))
        if not references:
            d.text((margin, top), "no reference images found", fill=(160, 40, 40), font=prompt_font)
        return Generation(brief.id, self.name, None, png_bytes(board), text="", finish_reason="STOP")

    def _edit(self, brief: Brief, references: Sequence[Reference], edit: Edit) -> Generation:
        """The image to change, warmed a little, with the instruction written under it and the references
        in a strip beside it: what an editor would be asked, laid out."""
        W, H = output_size(brief.aspect_ratio, brief.image_size)
        board = Image.new("RGB", (W, H), (250, 244, 232))
        d = ImageDraw.Draw(board)
        margin = W // 32
        strip = W // 6 if references else 0
        banner = max(60, H // 6)
        base = load_rgb(edit.image)
        base.thumbnail((W - strip - 2 * margin, H - banner - 2 * margin), Image.LANCZOS)
        warm = Image.merge("RGB", [c.point(lambda v, f=f: min(255, round(v * f)))
                                   for c, f in zip(base.split(), (1.06, 1.0, 0.9))])
        board.paste(warm, (margin, margin))
        for k, ref in enumerate(references[:4]):
            try:
                img = load_rgb(ref.path)
            except Exception:
                continue
            img.thumbnail((strip - margin, strip - margin))
            board.paste(img, (W - strip, margin + k * strip))
        d.multiline_text((margin, H - banner), wrap(f"Edit: {edit.instruction}", 80), fill=(40, 30, 20),
                         font=font(max(14, W // 56)), spacing=4)
        return Generation(brief.id, self.name, None, png_bytes(board), text="", finish_reason="STOP")
