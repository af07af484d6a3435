"""Ranked-list image grid (as in the paper's Fig. 6): pure PIL, no model.

Each row is a query followed by its ranked gallery images. Every image is resized to
``cell_height x cell_width`` and framed by a ``border``-pixel frame: the query colour for the
query, green for a correct match, red for a wrong one; a caption strip of
``caption_height`` pixels sits under each frame. Layout, in pixels::

    framed width   fw = cell_width + 2 * border
    framed height  fh = cell_height + 2 * border
    slot height    sh = fh + caption_height
    grid width     (columns + 1) * fw + (columns + 2) * padding + query_gap
    grid height    rows * sh + (rows + 1) * padding

where ``columns`` is the number of gallery columns; the extra ``query_gap`` separates the
query column from the ranked images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]


def _color(value: Sequence[int], name: str) -> Color:
    rgb = tuple(int(v) for v in value)
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"grid colour {name} must be three integers in 0..255, got {value!r}")
    return rgb  # type: ignore[return-value]


@dataclass
class GridStyle:
    """Sizes (pixels) and colours (RGB) of the ranked-list grid; see the module docstring."""

    cell_height: int = 128
    cell_width: int = 64
    border: int = 4
    caption_height: int = 26
    padding: int = 4
    query_gap: int = 16
    font_size: int = 11
    correct_color: Color = (0, 170, 0)
    wrong_color: Color = (220, 0, 0)
    query_color: Color = (40, 90, 220)
    background: Color = (255, 255, 255)
    text_color: Color = (0, 0, 0)

    def __post_init__(self) -> None:
        for name in ("cell_height", "cell_width", "font_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"grid.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("border", "caption_height", "padding", "query_gap"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"grid.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("correct_color", "wrong_color", "query_color", "background", "text_color"):
            setattr(self, name, _color(getattr(self, name), name))

    @property
    def framed_size(self) -> tuple[int, int]:
        """``(fw, fh)``: one image with its frame."""
        return self.cell_width + 2 * self.border, self.cell_height + 2 * self.border

    @property
    def slot_height(self) -> int:
        """``sh``: framed image plus caption strip."""
        return self.framed_size[1] + self.caption_height


@dataclass
class GridRow:
    """One row: the query image and its ranked gallery images, best first.

    ``correct[i]`` decides the frame colour of ``gallery[i]``; ``captions[i]`` (lines split at
    ``\\n``) is written under it, ``query_caption`` under the query.
    """

    query: Image.Image
    gallery: list[Image.Image]
    correct: list[bool]
    query_caption: str = ""
    captions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.correct) != len(self.gallery):
            raise ValueError(
                f"a grid row has {len(self.gallery)} gallery images but "
                f"{len(self.correct)} correctness flags"
            )
        if self.captions and len(self.captions) != len(self.gallery):
            raise ValueError(
                f"a grid row has {len(self.gallery)} gallery images but "
                f"{len(self.captions)} captions"
            )


def grid_size(num_rows: int, num_columns: int, style: GridStyle) -> tuple[int, int]:
    """``(width, height)`` in pixels of a grid of ``num_rows`` queries, each followed by
    ``num_columns`` gallery images."""
    fw, _ = style.framed_size
    width = (num_columns + 1) * fw + (num_columns + 2) * style.padding + style.query_gap
    height = num_rows * style.slot_height + (num_rows + 1) * style.padding
    return width, height


def cell_box(row: int, column: int, style: GridStyle) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive ends) of the framed image in ``row`` and ``column``
    (column 0 is the query, column ``r`` the rank-``r`` image)."""
    fw, fh = style.framed_size
    x0 = style.padding + column * (fw + style.padding) + (style.query_gap if column else 0)
    y0 = style.padding + row * (style.slot_height + style.padding)
    return x0, y0, x0 + fw, y0 + fh


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` pixels (its fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _draw_cell(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    box: tuple[int, int, int, int],
    image: Image.Image,
    color: Color,
    caption: str,
    style: GridStyle,
) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color)
    resized = image.convert("RGB").resize((style.cell_width, style.cell_height), Image.BILINEAR)
    canvas.paste(resized, (x0 + style.border, y0 + style.border))
    line_height = style.caption_height / max(1, caption.count("\n") + 1)
    for i, line in enumerate(caption.split("\n") if caption else []):
        draw_centered(draw, font, line, (x0 + x1) / 2, y1 + i * line_height + 1, style.text_color)


def draw_centered(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    text: str,
    x_center: float,
    y_top: float,
    color: Color,
) -> None:
    """Draw one line of ``text`` horizontally centred on ``x_center`` below ``y_top`` (works
    with FreeType and bitmap fonts alike)."""
    width = draw.textlength(text, font=font)
    draw.text((round(x_center - width / 2), round(y_top)), text, fill=color, font=font)


def render_grid(
    rows: Sequence[GridRow], style: GridStyle | None = None, num_columns: int | None = None
) -> Image.Image:
    """Draw the ranked-list grid.

    Args:
        rows: one :class:`GridRow` per query (at least one).
        style: sizes and colours (defaults of :class:`GridStyle` when None).
        num_columns: gallery columns; default the longest row (shorter rows leave blanks).

    Returns:
        An RGB image of size :func:`grid_size` ``(len(rows), num_columns, style)``.
    """
    style = style or GridStyle()
    if not rows:
        raise ValueError("render_grid needs at least one row")
    longest = max(len(row.gallery) for row in rows)
    columns = longest if num_columns is None else num_columns
    if columns < max(1, longest):
        raise ValueError(f"num_columns={num_columns} is smaller than the longest row ({longest})")
    canvas = Image.new("RGB", grid_size(len(rows), columns, style), style.background)
    draw = ImageDraw.Draw(canvas)
    font = load_font(style.font_size)
    for r, row in enumerate(rows):
        query_box = cell_box(r, 0, style)
        _draw_cell(
            canvas, draw, font, query_box, row.query, style.query_color, row.query_caption, style
        )
        for c, (image, ok) in enumerate(zip(row.gallery, row.correct, strict=True), start=1):
            color = style.correct_color if ok else style.wrong_color
            caption = row.captions[c - 1] if row.captions else ""
            _draw_cell(canvas, draw, font, cell_box(r, c, style), image, color, caption, style)
    return canvas
