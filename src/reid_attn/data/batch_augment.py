"""The strong baseline's training augmentation on whole batches of uint8 images, on their device.

Same steps, parameters and probabilities as :func:`reid_attn.data.transforms.build_train_transform`
(horizontal flip, zero padding + random crop, ``ToTensor`` + normalisation, torchvision's
``RandomErasing(p, value=0)`` on the normalised image), drawn per image from an explicit
``torch.Generator`` so a batch's augmentation is a function of that generator's seed alone.
Parameters are drawn (:meth:`BatchAugment.draw`) and applied (:meth:`BatchAugment.apply`)
separately: the tests compare the application with torchvision's functional ops image by image
and the draws with the transforms' distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from reid_attn.data.transforms import IMAGENET_MEAN, IMAGENET_STD

#: ``RandomErasing``'s defaults (torchvision), which the loader pipeline uses.
ERASING_SCALE = (0.02, 0.33)
ERASING_RATIO = (0.3, 3.3)
#: ``RandomErasing`` tries this many (area, aspect) draws before leaving an image as it is.
ERASING_ATTEMPTS = 10


@dataclass(frozen=True)
class AugmentParams:
    """Per-image draws of one batch of B images (all tensors on the batch's device).

    flip: (B,) bool, mirror the image. top, left: (B,) long, the crop's corner in the padded
    image, in ``[0, 2 * pad]``. erase: (B,) bool, an area is erased; erase_box: (B, 4) long,
    its ``(i, j, h, w)`` (rows ``i..i+h-1``, columns ``j..j+w-1``), meaningful where ``erase``.
    """

    flip: Tensor
    top: Tensor
    left: Tensor
    erase: Tensor
    erase_box: Tensor


class BatchAugment:
    """uint8 images ``(B, 3, H, W)`` -> augmented, normalised float32 ``(B, 3, H, W)``.

    Args:
        flip_prob: probability of a horizontal flip.
        pad: zero padding on each side before the random ``H x W`` crop (0: no crop).
        erasing_prob: probability of erasing a rectangle (0: never).
        mean, std: per-channel normalisation of ``[0, 1]`` pixel values.
        erasing_scale: erased area as a fraction of the image, ``(min, max)``.
        erasing_ratio: erased rectangle's aspect ``h / w``, ``(min, max)``, drawn log-uniformly.
    """

    def __init__(
        self,
        flip_prob: float = 0.5,
        pad: int = 10,
        erasing_prob: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        erasing_scale: tuple[float, float] = ERASING_SCALE,
        erasing_ratio: tuple[float, float] = ERASING_RATIO,
    ) -> None:
        if not (0 <= flip_prob <= 1 and 0 <= erasing_prob <= 1) or pad < 0:
            raise ValueError(
                f"flip_prob and erasing_prob must lie in [0, 1] and pad be >= 0, got "
                f"{flip_prob}, {erasing_prob}, {pad}"
            )
        self.flip_prob, self.pad, self.erasing_prob = flip_prob, pad, erasing_prob
        self.mean, self.std = tuple(mean), tuple(std)
        self.erasing_scale, self.erasing_ratio = erasing_scale, erasing_ratio

    def draw(
        self, batch: int, height: int, width: int, generator: torch.Generator
    ) -> AugmentParams:
        """Draw every image's parameters on ``generator``'s device (no host synchronisation)."""
        device = generator.device
        uniform = torch.rand(batch, 6 + 2 * ERASING_ATTEMPTS, generator=generator, device=device)
        crop_positions = 2 * self.pad + 1
        top = (uniform[:, 1] * crop_positions).long().clamp_max(2 * self.pad)
        left = (uniform[:, 2] * crop_positions).long().clamp_max(2 * self.pad)
        # RandomErasing.get_params: up to ERASING_ATTEMPTS (area, log-aspect) draws; the first
        # whose rounded h x w fits strictly inside the image is used, then a uniform position.
        low_scale, high_scale = self.erasing_scale
        log_low, log_high = math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1])
        attempts = uniform[:, 6:].view(batch, 2, ERASING_ATTEMPTS)
        area = height * width * (low_scale + (high_scale - low_scale) * attempts[:, 0])
        aspect = torch.exp(log_low + (log_high - log_low) * attempts[:, 1])
        heights = torch.round(torch.sqrt(area * aspect)).long()
        widths = torch.round(torch.sqrt(area / aspect)).long()
        fits = (heights < height) & (widths < width)
        first = fits.int().argmax(dim=1, keepdim=True)
        h = heights.gather(1, first).squeeze(1)
        w = widths.gather(1, first).squeeze(1)
        i = (uniform[:, 3] * (height - h + 1)).long().clamp_max(height - h)
        j = (uniform[:, 4] * (width - w + 1)).long().clamp_max(width - w)
        return AugmentParams(
            flip=uniform[:, 0] < self.flip_prob,
            top=top,
            left=left,
            erase=(uniform[:, 5] < self.erasing_prob) & fits.any(dim=1),
            erase_box=torch.stack([i, j, h, w], dim=1),
        )

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Flip, pad + crop, normalise, erase: uint8 ``(B, 3, H, W)`` -> float32, same shape."""
        batch, channels, height, width = images.shape
        pad = self.pad
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # black, as T.Pad
        padded_width = width + 2 * pad
        rows = params.top[:, None] + torch.arange(height, device=images.device)
        columns = params.left[:, None] + torch.arange(width, device=images.device)
        # flip, then pad, then crop at `left`: column x of the crop is padded column
        # (W + 2 pad - 1) - (left + x) of the unflipped image (the padding is symmetric)
        columns = torch.where(params.flip[:, None], padded_width - 1 - columns, columns)
        source = (rows[:, :, None] * padded_width + columns[:, None, :]).view(batch, 1, -1)
        cropped = padded.view(batch, channels, -1).gather(2, source.expand(-1, channels, -1))
        out = normalize(cropped.view(batch, channels, height, width), self.mean, self.std)
        i, j, h, w = params.erase_box.unbind(1)
        y = torch.arange(height, device=images.device)
        x = torch.arange(width, device=images.device)
        in_rows = (y >= i[:, None]) & (y < (i + h)[:, None])
        in_columns = (x >= j[:, None]) & (x < (j + w)[:, None])
        erased = in_rows[:, :, None] & in_columns[:, None, :] & params.erase[:, None, None]
        return out.masked_fill_(erased[:, None], 0.0)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """:meth:`apply` with parameters :meth:`draw` takes from ``generator``."""
        batch, _, height, width = images.shape
        return self.apply(images, self.draw(batch, height, width, generator))


def normalize(
    images: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32, as ``T.ToTensor`` then ``T.Normalize`` compute it
    (operation for operation, so the same float32 rounding; in place, one allocation)."""
    mean_t, std_t = _channel_constants(tuple(mean), tuple(std), images.device)
    return images.float().div_(255).sub_(mean_t).div_(std_t)


@lru_cache(maxsize=8)
def _channel_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    """``mean`` and ``std`` as ``(1, C, 1, 1)`` tensors on ``device``, made once per device (a
    copy from host memory in every step would wait for the GPU)."""
    return (
        torch.tensor(mean, device=device).view(1, -1, 1, 1),
        torch.tensor(std, device=device).view(1, -1, 1, 1),
    )
