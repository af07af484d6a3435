"""A split's images decoded once, at the network's input size, into one uint8 tensor on a device.

The pixels are the loader pipeline's: PIL decoding, then ``T.Resize`` (PIL bilinear) to
``height x width``, kept as uint8 ``(N, 3, height, width)``; augmentation and normalisation
happen per batch (:mod:`reid_attn.data.batch_augment`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import functional as TF

from reid_attn.data.datasets import DatasetError, Item
from reid_attn.data.image_dataset import read_image

#: Images decoded per loader batch while a cache is filled.
DECODE_BATCH = 256


class MemoryCacheError(DatasetError):
    """The decoded images do not fit in the device's memory; the message says what to pass."""


def cache_bytes(count: int, height: int, width: int) -> int:
    """Bytes of ``count`` uint8 RGB images of ``height x width``."""
    return count * 3 * height * width


def available_bytes(device: torch.device) -> int:
    """Free memory of ``device``: on CUDA the driver's free bytes, on the CPU the kernel's
    ``MemAvailable`` (free pages plus what the page cache can give back)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def format_bytes(count: int) -> str:
    """``count`` bytes in GiB (from 1 GiB) or MiB, e.g. ``1.27 GiB``, ``0.6 MiB``."""
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def check_cache_fits(needed: int, available: int, fraction: float, device: torch.device) -> None:
    """Raise :class:`MemoryCacheError` unless ``needed <= fraction * available`` bytes."""
    budget = int(fraction * available)
    if needed > budget:
        raise MemoryCacheError(
            f"data.pipeline=memory needs {format_bytes(needed)} on {device} for the decoded "
            f"images, {format_bytes(budget)} is allowed (data.memory_fraction={fraction} of "
            f"{format_bytes(available)} free); pass data.pipeline=loader to read the images "
            "from disk each epoch instead"
        )


class ResizedImages(Dataset):
    """``dataset[i] -> uint8 (3, height, width)``: image ``i`` decoded and resized as the loader
    pipeline does (``T.Resize`` on the PIL image)."""

    def __init__(self, items: Sequence[Item], height: int, width: int) -> None:
        self.paths = [path for path, _, _ in items]
        self.size = [height, width]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        return TF.pil_to_tensor(TF.resize(read_image(self.paths[index]), self.size))


def decode_images(
    items: Sequence[Item], height: int, width: int, device: torch.device, num_workers: int = 0
) -> Tensor:
    """All ``items``' images as uint8 ``(N, 3, height, width)`` on ``device``, decoded by
    ``num_workers`` loader processes and copied in chunks (no second full copy in RAM)."""
    cache = torch.empty((len(items), 3, height, width), dtype=torch.uint8, device=device)
    loader = DataLoader(
        ResizedImages(items, height, width), batch_size=DECODE_BATCH, num_workers=num_workers
    )
    start = 0
    for chunk in loader:
        cache[start : start + len(chunk)].copy_(chunk)
        start += len(chunk)
    return cache
