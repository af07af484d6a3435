"""The memory pipeline: batched augmentation against torchvision, the device cache, the PK
batches drawn from it with per-step seeds, the automatic choice and the error when it does not
fit."""

from __future__ import annotations

import math
import os
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from conftest import SMALL_SYNTHETIC, stand_in_trainer
from reid_attn.config import ConfigError
from reid_attn.data import PKSampler, ReIDDataModule
from reid_attn.data.batch_augment import (
    ERASING_RATIO,
    ERASING_SCALE,
    AugmentParams,
    BatchAugment,
    normalize,
)
from reid_attn.data.image_dataset import ReIDImageDataset
from reid_attn.data.memory_cache import MemoryCacheError, available_bytes, check_cache_fits
from reid_attn.data.memory_pipeline import PKBatchOrder, auto_pipeline, step_seed
from reid_attn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_train_transform
from reid_attn.runs.files import run_entry
from reid_attn.train import train

#: The augmentation and the cache run on the training device: every device here is tested.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def _random_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=generator)


def _ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs."""
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


# ----------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("device", DEVICES)
def test_normalisation_equals_torchvision_on_the_same_image(device: str) -> None:
    images = _random_images(4, 64, 32)
    reference = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    expected = torch.stack([reference(_pil(img)) for img in images])
    torch.testing.assert_close(normalize(images.to(device)).cpu(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_batched_augmentation_equals_torchvision_image_by_image(device: str) -> None:
    # each image's own draws applied with torchvision's ops, in the loader's order, on PIL
    augment = BatchAugment()
    images = _random_images(32, 64, 32)
    params = augment.draw(32, 64, 32, torch.Generator(device).manual_seed(3))
    assert 0 < params.flip.sum() < 32 and 0 < params.erase.sum() < 32  # both branches ran
    out = augment.apply(images.to(device), params).cpu()
    params = AugmentParams(*(t.cpu() for t in astuple(params)))
    for b, image in enumerate(images):
        pil = _pil(image)
        if params.flip[b]:
            pil = TF.hflip(pil)
        pil = TF.crop(TF.pad(pil, 10), int(params.top[b]), int(params.left[b]), 64, 32)
        expected = TF.normalize(TF.to_tensor(pil), IMAGENET_MEAN, IMAGENET_STD)
        if params.erase[b]:
            i, j, h, w = (int(v) for v in params.erase_box[b])
            expected = TF.erase(expected, i, j, h, w, torch.tensor(0.0))
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-6, msg=f"image {b}")


def test_flip_rate_and_crop_offsets_follow_the_transforms() -> None:
    n = 20000
    params = BatchAugment(pad=10).draw(n, 256, 128, torch.Generator().manual_seed(0))
    assert abs(params.flip.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / n)
    for offsets in (params.top, params.left):  # RandomCrop on the padded image: 0..2 pad
        counts = torch.bincount(offsets, minlength=21)
        assert len(counts) == 21 and offsets.min() == 0 and offsets.max() == 20
        expected = n / 21
        assert (counts - expected).abs().max() < 5 * math.sqrt(expected)
    never = BatchAugment(flip_prob=0.0, pad=0, erasing_prob=0.0).draw(
        100, 64, 32, torch.Generator().manual_seed(0)
    )
    assert not never.flip.any() and not never.erase.any()
    assert (never.top == 0).all() and (never.left == 0).all()


@pytest.mark.parametrize(("height", "width"), [(256, 128), (6, 6)])
def test_erased_rectangles_match_torchvisions_random_erasing(height: int, width: int) -> None:
    # (6, 6): many (area, aspect) draws do not fit, so the 10-attempt rule matters
    n = 4000
    params = BatchAugment(erasing_prob=1.0).draw(n, height, width, torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    image = torch.zeros(3, height, width)
    reference = []
    for _ in range(n):
        i, j, h, w, _v = T.RandomErasing.get_params(image, ERASING_SCALE, ERASING_RATIO, [0.0])
        reference.append((i, j, h, w, h < height))  # h == height: all attempts failed
    ref = np.array(reference, dtype=float)
    ours_erased = params.erase.numpy()
    assert abs(ours_erased.mean() - ref[:, 4].mean()) < 4 * math.sqrt(0.25 / n) * math.sqrt(2)
    box = params.erase_box[params.erase].numpy().astype(float)
    ref = ref[ref[:, 4] == 1]
    i, j, h, w = box.T
    # within the image, and area and aspect within RandomErasing's ranges up to the rounding of
    # h = round(sqrt(area * aspect)) and w = round(sqrt(area / aspect))
    assert (i >= 0).all() and (j >= 0).all() and (i + h <= height).all() and (j + w <= width).all()
    assert (h < height).all() and (w < width).all()
    area = height * width
    assert ((h + 0.5) * (w + 0.5) >= ERASING_SCALE[0] * area).all()
    assert ((h - 0.5) * (w - 0.5) <= ERASING_SCALE[1] * area).all()
    sized = (h >= 1) & (w >= 1)  # at 6x6 a side may round to 0 (torchvision's too)
    assert ((h + 0.5) / (w - 0.5) >= ERASING_RATIO[0])[sized].all()
    assert ((h - 0.5) / (w + 0.5) <= ERASING_RATIO[1])[sized].all()
    # the same distributions as torchvision's own draws (two-sample KS, alpha ~ 1e-3)
    bound = 1.95 * math.sqrt((len(box) + len(ref)) / (len(box) * len(ref)))
    for name, ours, theirs in [
        ("area", h * w, ref[:, 2] * ref[:, 3]),
        ("aspect", h / np.maximum(w, 0.5), ref[:, 2] / np.maximum(ref[:, 3], 0.5)),
        ("row", i / np.maximum(height - h, 1), ref[:, 0] / np.maximum(height - ref[:, 2], 1)),
        ("column", j / np.maximum(width - w, 1), ref[:, 1] / np.maximum(width - ref[:, 3], 1)),
    ]:
        assert _ks_statistic(ours, theirs) < bound, name


def test_erasing_rate_is_its_probability() -> None:
    n = 20000
    params = BatchAugment(erasing_prob=0.5).draw(n, 256, 128, torch.Generator().manual_seed(2))
    assert abs(params.erase.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / n)


def test_augmentation_is_a_function_of_the_generator_seed() -> None:
    augment = BatchAugment()
    images = _random_images(8, 64, 32)
    first = augment(images, torch.Generator().manual_seed(5))
    torch.rand(100)  # the global generator plays no part
    again = augment(images, torch.Generator().manual_seed(5))
    other = augment(images, torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)


# ----------------------------------------------------------------------------- datamodule


def _datamodule(root: Path, **kwargs) -> ReIDDataModule:
    settings = {
        "root": str(root),
        "height": 64,
        "width": 32,
        "num_identities": 2,
        "num_instances": 2,
        "val_identities": 2,
        "num_workers": 0,
        "eval_batch_size": 16,
        "synthetic": SMALL_SYNTHETIC,
        **kwargs,
    }
    datamodule = ReIDDataModule(**settings)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("device", DEVICES)
def test_memory_eval_batches_equal_the_loader_pipelines(tmp_path, device: str) -> None:
    memory = _datamodule(tmp_path, pipeline="memory")
    memory.cache_device = torch.device(device)
    loader = _datamodule(tmp_path, pipeline="loader")
    for split in ("val", "test"):
        get = memory.val_dataloader if split == "val" else memory.test_dataloader
        expected = loader.val_dataloader if split == "val" else loader.test_dataloader
        batches = list(get())
        assert len(batches) == len(list(expected())) > 0
        for ours, theirs in zip(batches, expected(), strict=True):
            assert ours[0].device.type == device
            for a, b in zip(ours, theirs, strict=True):
                torch.testing.assert_close(a.cpu(), b, rtol=0, atol=1e-6, check_dtype=False)
    assert memory.active_pipeline == "memory" and loader.active_pipeline == "loader"


def test_memory_training_batches_are_the_pk_batches_of_the_cached_images(tmp_path) -> None:
    # no flip, crop or erasing: each image must be the loader's training image of its index
    plain = {"flip_prob": 0.0, "pad": 0, "erasing_prob": 0.0}
    datamodule = _datamodule(tmp_path, pipeline="memory", **plain)
    loader = datamodule.train_dataloader()
    sampler = PKSampler([p for _, p, _ in datamodule.train_items], 2, 2, seed=0)
    reference = ReIDImageDataset(datamodule.train_items, build_train_transform(64, 32, **plain))
    batches = list(loader)
    assert len(batches) == len(sampler.rank_batches()) > 1
    for (images, pids, camids, flags), indices in zip(batches, sampler.rank_batches(), strict=True):
        assert images.shape == (4, 3, 64, 32) and images.dtype == torch.float32
        assert flags.tolist() == [0] * 4
        for k, index in enumerate(indices):
            image, pid, camid, _ = reference[int(index)]
            torch.testing.assert_close(images[k], image, rtol=0, atol=0)
            assert (int(pids[k]), int(camids[k])) == (pid, camid)


def test_memory_training_batches_depend_on_seed_epoch_and_step_only(tmp_path) -> None:
    def epoch_batches(epoch: int, seed: int = 0) -> list[torch.Tensor]:
        datamodule = _datamodule(tmp_path, pipeline="memory", seed=seed)
        datamodule.trainer = stand_in_trainer(epoch)
        torch.manual_seed(epoch * 1000 + 17)  # global randomness plays no part
        return [images for images, *_ in datamodule.train_dataloader()]

    first, again = epoch_batches(1), epoch_batches(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], epoch_batches(2)[0])
    assert not torch.equal(first[0], epoch_batches(1, seed=1)[0])
    # a loader re-iterated after set_epoch (Lightning's path) gives the same batches
    datamodule = _datamodule(tmp_path, pipeline="memory")
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(1)
    assert all(torch.equal(a, b[0]) for a, b in zip(first, loader, strict=True))


def test_pk_batch_order_gives_each_step_its_own_seed() -> None:
    pids = [i // 3 for i in range(30)]
    sampler = PKSampler(pids, 2, 2, seed=4, rank=1, world_size=2)
    order = PKBatchOrder(sampler, seed=4)
    order.set_epoch(3)
    keys = list(order)
    assert len(keys) == len(order) == len(sampler.rank_batches())
    batches = sampler.rank_batches()
    for step, ((indices, seed), expected) in enumerate(zip(keys, batches, strict=True)):
        assert np.array_equal(indices, expected)
        assert seed == step_seed(4, 3, step, 1)
    seeds = {step_seed(s, e, t, r) for s in (0, 1) for e in (0, 1) for t in (0, 1) for r in (0, 1)}
    assert len(seeds) == 16 and all(0 <= v < 2**32 for v in seeds)


# ----------------------------------------------------------------------------- fitting


def test_cache_that_does_not_fit_is_a_clear_error() -> None:
    with pytest.raises(MemoryCacheError) as info:
        check_cache_fits(3 * 2**30, 4 * 2**30, 0.5, torch.device("cpu"))
    assert str(info.value) == (
        "data.pipeline=memory needs 3.00 GiB on cpu for the decoded images, 2.00 GiB is "
        "allowed (data.memory_fraction=0.5 of 4.00 GiB free); pass data.pipeline=loader to "
        "read the images from disk each epoch instead"
    )
    check_cache_fits(2 * 2**30, 4 * 2**30, 0.5, torch.device("cpu"))  # fits: no error
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < available_bytes(torch.device("cpu")) <= total


def test_training_with_a_cache_too_large_stops_with_one_line(train_cfg_factory) -> None:
    cfg = train_cfg_factory("data.pipeline=memory", "data.memory_fraction=1e-9")
    with pytest.raises(SystemExit) as info:
        run_entry(train, cfg)
    datamodule = ReIDDataModule(**OmegaConf.to_container(cfg.data, resolve=True))
    datamodule.setup()
    dataset = datamodule.dataset
    images = len(dataset.train) + len(dataset.query) + len(dataset.gallery)
    needed = images * 3 * cfg.data.height * cfg.data.width / 2**20
    message = info.value.code
    assert message.startswith(f"error: data.pipeline=memory needs {needed:.1f} MiB on cpu")
    assert message.endswith(
        "pass data.pipeline=loader to read the images from disk each epoch instead"
    )
    assert not (Path(cfg.output_dir) / "checkpoints").exists()


def test_auto_pipeline_choice(tmp_path, capsys) -> None:
    assert auto_pipeline(torch.device("cuda"), fits=True) == "memory"
    assert auto_pipeline(torch.device("cuda"), fits=False) == "loader"
    assert auto_pipeline(torch.device("cpu"), fits=False) == "loader"
    tight = _datamodule(tmp_path, pipeline="auto", memory_fraction=1e-9)
    assert tight.resolve_pipeline() == "loader"
    assert "data.pipeline=auto: the decoded images" in capsys.readouterr().out
    images, *_ = next(iter(tight.train_dataloader()))
    assert images.shape == (4, 3, 64, 32)


def test_auto_pipeline_reads_from_disk_when_overfitting(tmp_path, monkeypatch) -> None:
    """Lightning's overfit mode swaps the training sampler for a sequential one over images,
    which only the loader pipeline takes: ``auto`` picks it even where it would cache."""
    monkeypatch.setattr("reid_attn.data.datamodule.auto_pipeline", lambda device, fits: "memory")
    assert _datamodule(tmp_path, pipeline="auto").resolve_pipeline() == "memory"
    overfitting = _datamodule(tmp_path, pipeline="auto")
    overfitting.trainer = stand_in_trainer(0, overfit_batches=1)
    assert overfitting.resolve_pipeline() == "loader"


def test_overfit_batches_with_the_memory_pipeline_is_a_clear_error(train_cfg_factory) -> None:
    cfg = train_cfg_factory("trainer.overfit_batches=1", "data.pipeline=memory")
    with pytest.raises(ConfigError, match=r"trainer\.overfit_batches needs data\.pipeline=loader"):
        train(cfg)
    assert not (Path(cfg.output_dir) / "checkpoints").exists()
