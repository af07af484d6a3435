"""The memory pipeline's loaders: batches gathered from a device cache of decoded images
(:mod:`reid_attn.data.memory_cache`) and augmented there, each training batch with its own
seed. The loaders run in the training process (no workers) and yield tensors that are already
on the cache's device.

``data.pipeline``: ``loader`` decodes and augments every image in loader workers each epoch;
``memory`` decodes each split once into a uint8 tensor on the training device and augments
whole batches there; ``auto`` picks :func:`auto_pipeline`'s choice.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from reid_attn.data.batch_augment import BatchAugment, normalize
from reid_attn.data.datasets import Item
from reid_attn.data.sampler import PKSampler

PIPELINES = ("auto", "loader", "memory")
#: ``data.pipeline=auto`` on the CPU: the memory pipeline's batches take a fraction of the CPU
#: time the loader workers' decoding takes each epoch (experiments/results/bench_pipeline*.md).
CPU_AUTO_PIPELINE = "memory"


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """A 32-bit seed that depends on ``(seed, epoch, step, rank)`` alone (NumPy's
    ``SeedSequence`` mixes them: neighbouring inputs give unrelated streams)."""
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0])


def auto_pipeline(device: torch.device, fits: bool) -> str:
    """``memory`` on a GPU, :data:`CPU_AUTO_PIPELINE` on the CPU, ``loader`` when the decoded
    images do not fit (``fits``)."""
    if not fits:
        return "loader"
    return "memory" if device.type == "cuda" else CPU_AUTO_PIPELINE


class PKBatchOrder(Sampler[tuple[np.ndarray, int]]):
    """Per PK batch of this rank's share of the epoch: ``(dataset indices (P*K,), seed)``, the
    seed being :func:`step_seed` ``(seed, epoch, step, rank)`` of the batch's augmentation.
    :meth:`set_epoch` selects the epoch (Lightning calls it at each epoch's start)."""

    def __init__(self, sampler: PKSampler, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields."""
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        sampler = self.sampler
        for step, indices in enumerate(sampler.rank_batches()):
            yield indices, step_seed(self.seed, sampler.epoch, step, sampler.rank)

    def __len__(self) -> int:
        return len(self.sampler.rank_batches())


def whole_batch(batch: Any) -> Any:
    """``collate_fn`` of loaders whose dataset returns whole batches (``__getitems__``)."""
    return batch


class TrainBatches(Dataset):
    """``dataset[(indices, seed)] -> (images, pids, camids, is_query)``: one augmented PK batch
    of B images ``(B, 3, H, W)`` float32, gathered from ``cache`` (uint8 ``(N, 3, H, W)``) and
    augmented on its device by ``augment`` with a generator seeded by ``seed``; labels
    ``(B,)`` on the same device, ``is_query`` zeros. Keys come from :class:`PKBatchOrder`
    (a loader with ``batch_size=None`` and no worker processes)."""

    def __init__(self, cache: Tensor, items: Sequence[Item], augment: BatchAugment) -> None:
        self.cache = cache
        self.pids = torch.tensor([pid for _, pid, _ in items], device=cache.device)
        self.camids = torch.tensor([camid for _, _, camid in items], device=cache.device)
        self.augment = augment
        self.generator = torch.Generator(cache.device)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, key: tuple[np.ndarray, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        indices, seed = key
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        index = index.to(self.cache.device, non_blocking=True)
        self.generator.manual_seed(seed)
        pids = self.pids[index]
        images = self.augment(self.cache[index], self.generator)
        return images, pids, self.camids[index], torch.zeros_like(pids)


class EvalBatches(Dataset):
    """Query + gallery images from ``cache`` (uint8 ``(N, 3, H, W)``, the order of
    :class:`reid_attn.data.image_dataset.ReIDImageDataset`), normalised on its device:
    ``dataset.__getitems__(indices) -> (images (B, 3, H, W), pids, camids, is_query)``, all on
    the cache's device (a loader with ``collate_fn=whole_batch``)."""

    def __init__(self, cache: Tensor, items: Sequence[Item], num_query: int) -> None:
        self.cache = cache
        self.pids = torch.tensor([pid for _, pid, _ in items], device=cache.device)
        self.camids = torch.tensor([camid for _, _, camid in items], device=cache.device)
        self.is_query = (torch.arange(len(items)) < num_query).long().to(cache.device)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        images, pids, camids, is_query = self.__getitems__([index])
        return images[0], pids[0], camids[0], is_query[0]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        index = torch.as_tensor(indices).to(self.cache.device, non_blocking=True)
        return (
            normalize(self.cache[index]),
            self.pids[index],
            self.camids[index],
            self.is_query[index],
        )
