"""What the figure-writing commands share: distance captions and PNG files."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def format_distance(distance: float, digits: int = 3) -> str:
    """``digits`` significant digits without exponent notation for large values
    (``1681.4 -> "1681"``, ``0.51234 -> "0.512"``)."""
    if abs(distance) >= 10**digits:
        return f"{distance:.0f}"
    return f"{distance:.{digits}g}"


def save_png(image: Image.Image, path: Path, colors: int = 0) -> Path:
    """Save ``image`` as an optimised PNG; ``colors > 0`` stores it with a palette of that many
    colours (a much smaller file for noisy images; frames keep their hue)."""
    if colors < 0 or colors > 256:
        raise ValueError(f"png_colors={colors} must lie in 0..256 (0 = full colour)")
    if colors:
        image = image.quantize(colors)
    image.save(path, optimize=True)
    return path
