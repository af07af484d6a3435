"""Image transforms of the strong re-id baseline (Luo et al., 2019)."""

from __future__ import annotations

from collections.abc import Sequence

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_train_transform(
    height: int,
    width: int,
    flip_prob: float = 0.5,
    pad: int = 10,
    erasing_prob: float = 0.5,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """PIL image -> float tensor (3, height, width): resize, flip, pad + random crop,
    normalise, random erasing."""
    steps = [T.Resize((height, width)), T.RandomHorizontalFlip(flip_prob)]
    if pad > 0:
        steps += [T.Pad(pad), T.RandomCrop((height, width))]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if erasing_prob > 0:
        steps.append(T.RandomErasing(p=erasing_prob, value=0))
    return T.Compose(steps)


def build_test_transform(
    height: int,
    width: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> T.Compose:
    """PIL image -> float tensor (3, height, width): resize and normalise."""
    return T.Compose([T.Resize((height, width)), T.ToTensor(), T.Normalize(mean, std)])
