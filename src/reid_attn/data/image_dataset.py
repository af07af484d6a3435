"""A torch Dataset over ``(img_path, pid, camid)`` items."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from reid_attn.data.datasets import DatasetError, Item


def read_image(path: str) -> Image.Image:
    """Open ``path`` as an RGB PIL image; a missing or corrupt file raises :class:`DatasetError`."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


class ReIDImageDataset(Dataset):
    """``dataset[i] -> (image (3,H,W) float, pid, camid, is_query)``.

    Args:
        items: ``(img_path, pid, camid)`` tuples.
        transform: PIL image -> tensor.
        num_query: the first ``num_query`` items are queries (flag 1), the rest gallery/train.
    """

    def __init__(
        self, items: Sequence[Item], transform: Callable[[Image.Image], Tensor], num_query: int = 0
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.num_query = num_query

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, int]:
        path, pid, camid = self.items[index]
        return self.transform(read_image(path)), pid, camid, int(index < self.num_query)
