"""A torch Dataset over ``(img_path, pid, camid)`` items."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from reid_attn.data.datasets import DatasetError, Item


def read_image(path: str, upright: bool = False) -> Image.Image:
    """Open ``path`` as an RGB PIL image; with ``upright``, turned as its EXIF Orientation tag
    says (a photo as a viewer shows it, width and height swapped for a quarter turn). A missing
    or corrupt file raises :class:`DatasetError`."""
    try:
        with Image.open(path) as image:
            if upright:
                ImageOps.exif_transpose(image, in_place=True)
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


class ReIDImageDataset(Dataset):
    """``dataset[i] -> (image (3,H,W) float, pid, camid, is_query)``.

    Args:
        items: ``(img_path, pid, camid)`` tuples.
        transform: PIL image -> tensor.
        query_flags: 1 for each item that is a query (an evaluation's items, e.g. in
            :func:`proportional_order`); ``None``: no queries (training items).
    """

    def __init__(
        self,
        items: Sequence[Item],
        transform: Callable[[Image.Image], Tensor],
        query_flags: Sequence[int] | None = None,
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.query_flags = [0] * len(self.items) if query_flags is None else list(query_flags)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, int]:
        path, pid, camid = self.items[index]
        return self.transform(read_image(path)), pid, camid, self.query_flags[index]


def proportional_order(num_query: int, num_gallery: int) -> list[int]:
    """Positions ``0..Q+G-1`` of ``query + gallery`` in the order an evaluation loader yields
    them: queries and gallery images each in their own order, merged in proportion (item
    ``i`` of a list of ``n`` at ``(i + 0.5) / n``; queries first at a tie), so that the first
    fraction ``f`` of the order (Lightning's ``limit_val_batches`` / ``limit_test_batches``)
    holds about ``f`` of the queries and ``f`` of the gallery: a smaller retrieval problem."""
    keys = [((i + 0.5) / num_query, 0, i) for i in range(num_query)]
    keys += [((j + 0.5) / num_gallery, 1, num_query + j) for j in range(num_gallery)]
    return [position for _, _, position in sorted(keys)]
