"""LightningDataModule: PK-sampled training loader, query+gallery loaders for val and test."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from reid_attn.data.batch_augment import BatchAugment
from reid_attn.data.datasets import MSMT17, DukeMTMC, Item, Market1501, SyntheticMarket
from reid_attn.data.image_dataset import (
    ReIDImageDataset,
    proportional_order,
    read_image,
)
from reid_attn.data.memory_cache import (
    available_bytes,
    cache_bytes,
    check_cache_fits,
    decode_images,
    format_bytes,
)
from reid_attn.data.memory_pipeline import (
    PIPELINES,
    EvalBatches,
    PKBatchOrder,
    TrainBatches,
    auto_pipeline,
    whole_batch,
)
from reid_attn.data.sampler import PKSampler
from reid_attn.data.synthetic import SyntheticSpec, generate_synthetic_market
from reid_attn.data.transforms import build_test_transform, build_train_transform

DATASETS = {
    "synthetic": SyntheticMarket,
    "market1501": Market1501,
    "dukemtmc": DukeMTMC,
    "msmt17": MSMT17,
}


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed that depends on ``(seed, epoch, rank)`` alone (mixed by NumPy's
    ``SeedSequence``, so neighbouring inputs give unrelated streams); all ``>= 0``."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def split_validation(
    train: list[Item], num_val_ids: int
) -> tuple[list[Item], list[Item], list[Item]]:
    """Hold out the last ``num_val_ids`` training identities as a validation retrieval set.

    Returns ``(train, val_query, val_gallery)``: train is relabelled to ``0..N-1``; for each
    held-out identity and camera the first image is a query and the others are gallery images.
    """
    pids = sorted({pid for _, pid, _ in train})
    if num_val_ids < 0 or num_val_ids > len(pids) - 2:
        raise ValueError(
            f"data.val_identities must be in [0, {len(pids) - 2}] for {len(pids)} training "
            f"identities, got {num_val_ids}"
        )
    held = set(pids[len(pids) - num_val_ids :])
    keep = [item for item in train if item[1] not in held]
    labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in keep}))}
    query, gallery, seen = [], [], set()
    for item in train:
        if item[1] in held:
            key = (item[1], item[2])
            (gallery if key in seen else query).append(item)
            seen.add(key)
    return [(p, labels[pid], c) for p, pid, c in keep], query, gallery


class ReIDDataModule(pl.LightningDataModule):
    """Builds the dataset named ``name`` and serves train / val / test loaders.

    val and test loaders yield query images first, then gallery images, each batch
    ``(images, pids, camids, is_query)``. ``pipeline`` (see
    :mod:`reid_attn.data.memory_pipeline`): with ``loader`` the loaders decode and transform
    images in ``num_workers`` processes; with ``memory`` each split is decoded once into a uint8
    cache on :meth:`device` and the loaders gather and augment whole batches there (their
    tensors are already on that device). ``auto`` chooses when the first loader is built;
    ``memory_fraction`` is the share of the device's free memory the caches may take.
    """

    def __init__(
        self,
        name: str = "synthetic",
        root: str = "~/.cache/reid_attn",
        height: int = 128,
        width: int = 64,
        num_identities: int = 16,
        num_instances: int = 4,
        val_identities: int = 0,
        num_workers: int = 2,
        eval_batch_size: int = 128,
        flip_prob: float = 0.5,
        pad: int = 10,
        erasing_prob: float = 0.5,
        seed: int = 0,
        verify_images: bool = False,
        synthetic: dict | None = None,
        pipeline: str = "auto",
        memory_fraction: float = 0.5,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown pipeline {pipeline!r}; valid names: {', '.join(PIPELINES)}")
        self.name = name
        self.root = root
        self.height, self.width = height, width
        self.num_identities, self.num_instances = num_identities, num_instances
        self.val_identities = val_identities
        self.num_workers = num_workers
        self.eval_batch_size = eval_batch_size
        self.train_transform = build_train_transform(height, width, flip_prob, pad, erasing_prob)
        self.test_transform = build_test_transform(height, width)
        self.batch_augment = BatchAugment(flip_prob, pad, erasing_prob)
        self.pipeline = pipeline
        self.memory_fraction = memory_fraction
        self.active_pipeline: str | None = None  # what ``pipeline`` resolved to
        self.caches: dict[str, Tensor] = {}  # split -> uint8 (N, 3, H, W) on the device
        self.cache_device: torch.device | None = None  # without a trainer (default: CPU)
        self.seed = seed
        self.verify_images = verify_images
        self.synthetic = SyntheticSpec(**(synthetic or {}))
        if name == "synthetic":
            self.synthetic.validate()
        self.dataset: Market1501 | None = None

    def dataset_root(self) -> Path:
        """The folder the parser reads (generating the synthetic data there if needed)."""
        if self.name == "synthetic":
            return generate_synthetic_market(self.root, self.synthetic)
        return Path(self.root).expanduser()

    def prepare_data(self) -> None:
        self.dataset_root()

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        self.dataset = DATASETS[self.name](
            self.dataset_root(), check_counts=self.name != "synthetic"
        )
        if self.verify_images:
            self.check_images()
        self.train_items, self.val_query, self.val_gallery = split_validation(
            self.dataset.train, self.val_identities
        )
        self.num_classes = len({pid for _, pid, _ in self.train_items})

    def check_images(self) -> None:
        """Decode every image once; the first unreadable one raises DatasetError with its path."""
        for split in ("train", "query", "gallery"):
            for path, _, _ in getattr(self.dataset, split):
                read_image(path)

    def train_dataloader(self) -> DataLoader:
        """PK batches of augmented training images. The batch order and the augmentation draws
        of epoch ``e`` depend on ``(seed, e, rank)`` only: the sampler is set to the epoch the
        loader is built for (Lightning starts a resumed run's first epoch before it calls
        ``set_epoch``), the loader's ``generator``, which draws the worker seeds, is seeded
        from :func:`epoch_seed` (and re-seeded each epoch by
        :class:`reid_attn.callbacks.SeedEachEpoch`), and workers are not persistent, since
        they would carry their random state over from the epochs before. The memory
        pipeline's loader has no workers: batch ``step`` of epoch ``e`` is augmented with a
        generator seeded by :func:`reid_attn.data.memory_pipeline.step_seed`
        ``(seed, e, step, rank)``."""
        epoch, rank = 0, 0
        if self.trainer is not None:
            epoch = self.trainer.fit_loop.epoch_progress.current.processed
            rank = self.trainer.global_rank
        sampler = PKSampler(
            [pid for _, pid, _ in self.train_items],
            self.num_identities,
            self.num_instances,
            seed=self.seed,
        )
        sampler.set_epoch(epoch)
        if self.resolve_pipeline() == "memory":
            # batch_size=None: each key PKBatchOrder yields is one whole batch
            return DataLoader(
                TrainBatches(self.device_cache("train"), self.train_items, self.batch_augment),
                batch_size=None,
                sampler=PKBatchOrder(sampler, self.seed),
            )
        dataset = ReIDImageDataset(self.train_items, self.train_transform)
        return DataLoader(
            dataset,
            batch_size=sampler.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch, rank)),
        )

    def _retrieval_loader(self, split: str) -> DataLoader:
        items, query_flags = self.split_items(split)
        if self.resolve_pipeline() == "memory":
            dataset = EvalBatches(self.device_cache(split), items, query_flags)
            return DataLoader(dataset, batch_size=self.eval_batch_size, collate_fn=whole_batch)
        dataset = ReIDImageDataset(items, self.test_transform, query_flags)
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_query:
            return []
        return self._retrieval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._retrieval_loader("test")

    # ------------------------------------------------------------------ memory pipeline

    def split_items(self, split: str) -> tuple[list[Item], list[int]]:
        """``(items, is_query flag of each)`` of ``train``, ``val`` or ``test``; the queries and
        gallery images of val and test in :func:`proportional_order` (so a limited evaluation,
        ``trainer.limit_test_batches``, is a smaller retrieval problem)."""
        if split == "train":
            return self.train_items, [0] * len(self.train_items)
        query, gallery = (
            (self.val_query, self.val_gallery)
            if split == "val"
            else (self.dataset.query, self.dataset.gallery)
        )
        both = [*query, *gallery]
        order = proportional_order(len(query), len(gallery))
        return [both[k] for k in order], [int(k < len(query)) for k in order]

    def device(self) -> torch.device:
        """Where the memory pipeline keeps its images: the trainer's device, else
        ``cache_device``, else the CPU."""
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
        else:
            device = self.cache_device or torch.device("cpu")
        if device.type == "cuda" and device.index is None:  # as a tensor names its device
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def resolve_pipeline(self) -> str:
        """``loader`` or ``memory``: ``pipeline`` resolved (once) for :meth:`device`. The caches
        of the training, validation and test images must fit within ``memory_fraction`` of the
        device's free memory; when they do not, ``memory`` raises
        :class:`reid_attn.data.memory_cache.MemoryCacheError` and ``auto`` chooses
        ``loader``. ``auto`` also chooses ``loader`` under ``trainer.overfit_batches``, for
        which Lightning replaces the training sampler by a sequential one over images."""
        if self.active_pipeline is not None:
            return self.active_pipeline
        overfitting = self.trainer is not None and self.trainer.overfit_batches > 0
        if self.pipeline == "loader" or (self.pipeline == "auto" and overfitting):
            self.active_pipeline = "loader"
            return "loader"
        self.setup()
        device = self.device()
        count = sum(len(self.split_items(split)[0]) for split in ("train", "val", "test"))
        needed = cache_bytes(count, self.height, self.width)
        available = available_bytes(device)
        if self.pipeline == "memory":
            check_cache_fits(needed, available, self.memory_fraction, device)
            self.active_pipeline = "memory"
        else:
            fits = needed <= self.memory_fraction * available
            self.active_pipeline = auto_pipeline(device, fits)
            if not fits:
                print(
                    f"note: data.pipeline=auto: the decoded images ({format_bytes(needed)}) "
                    f"would take more than data.memory_fraction={self.memory_fraction} of "
                    f"{device}'s free memory; images are read by the loader"
                )
        return self.active_pipeline

    def device_cache(self, split: str) -> Tensor:
        """The split's images, uint8 ``(N, 3, height, width)`` on :meth:`device`, decoded on
        first use (PIL decoding + ``T.Resize``, as the loader pipeline)."""
        device = self.device()
        cache = self.caches.get(split)
        if cache is None or cache.device != device:
            start = time.perf_counter()
            items, _ = self.split_items(split)
            cache = decode_images(items, self.height, self.width, device, self.num_workers)
            self.caches[split] = cache
            print(
                f"data.pipeline=memory: {len(items)} {split} images decoded into "
                f"{format_bytes(cache.numel())} on {device} in "
                f"{time.perf_counter() - start:.1f} s"
            )
        return cache
