"""Attention modules that plug into a ResNet bottleneck after bn3.

* :class:`SqueezeExcite` — Hu et al., CVPR 2018.
* :class:`EfficientChannelAttention` — Wang et al., CVPR 2020 (ECA-Net).
* :class:`CBAM` — Woo et al., ECCV 2018: channel attention, then spatial attention.
* :class:`CBAMSpatialBN` — CBAM as its authors' code builds it: a BatchNorm after the spatial
  7x7 convolution.

All modules map a feature map ``(B, C, H, W)`` to a re-weighted map of the same shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_NAMES = ("none", "se", "eca", "cbam", "cbam_bn")


def _reduced_channels(channels: int, reduction: int) -> int:
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}")
    return max(1, channels // reduction)


# The pooled descriptors of all three modules are written for a cheap backward pass (it was
# over half of CBAM's cost on CPU, see experiments/results/bench_train.md). A sum scaled on the
# pooled tensor passes its gradient on as a broadcast view, where ``mean``'s backward writes a
# full-size tensor. Max-pooling with indices scatters the gradient, where ``amax``'s backward
# compares, counts and divides over the whole map. At a tie the gradient goes to one maximal
# element (as in ``nn.MaxPool2d``) instead of being shared; the values are the same.
def spatial_mean(x: Tensor) -> Tensor:
    """Mean over the spatial positions, ``(B, C, 1, 1)``."""
    height, width = x.shape[-2:]
    return x.sum((2, 3), keepdim=True) * (1.0 / (height * width))


def spatial_mean_max(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and maximum over the spatial positions: two ``(B, C, 1, 1)`` tensors."""
    return spatial_mean(x), F.adaptive_max_pool2d(x, 1)


def channel_max_mean(x: Tensor) -> Tensor:
    """Maximum and mean over the channels, stacked as ``(B, 2, H, W)`` (max first)."""
    batch, channels, height, width = x.shape
    # (B, HW, C) is a view of a channels-last map (a strided one otherwise), pooled along C.
    channel_max = F.adaptive_max_pool1d(x.flatten(2).transpose(1, 2), 1)
    channel_mean = x.sum(1, keepdim=True) * (1.0 / channels)
    return torch.cat([channel_max.view(batch, 1, height, width), channel_mean], dim=1)


class _ChannelMLP(nn.Module):
    """The bottleneck MLP of SE and of CBAM's channel attention: two 1x1 convs ``C -> C/r -> C``
    (with bias) and a ReLU between them, as ``fc1``, ``act``, ``fc2``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _reduced_channels(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def mlp(self, pooled: Tensor) -> Tensor:
        """``fc2(relu(fc1(pooled)))`` of pooled descriptors ``(N, C, 1, 1)``."""
        return self.fc2(self.act(self.fc1(pooled)))


class SqueezeExcite(_ChannelMLP):
    """Squeeze-and-excitation: global average pool, FC-ReLU-FC, sigmoid, channel re-weighting.

    Parameters: ``2 * C * (C // r) + C // r + C`` (two 1x1 convs with bias).
    """

    def channel_weights(self, x: Tensor) -> Tensor:
        """Per-channel weights in (0, 1), shape ``(B, C, 1, 1)``."""
        return torch.sigmoid(self.mlp(spatial_mean(x)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.channel_weights(x)


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
    """ECA's adaptive kernel size: ``int(|log2(C)/gamma + beta/gamma|)``, made odd (+1)."""
    k = int(abs(math.log2(channels) / gamma + beta / gamma))
    return k if k % 2 else k + 1


class EfficientChannelAttention(nn.Module):
    """ECA: global average pool, 1-D convolution across channels (no reduction), sigmoid.

    Parameters: ``k`` with ``k = eca_kernel_size(C)`` (one conv without bias).
    """

    def __init__(self, channels: int, gamma: int = 2, beta: int = 1) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, beta)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def channel_weights(self, x: Tensor) -> Tensor:
        """Per-channel weights in (0, 1), shape ``(B, C, 1, 1)``."""
        pooled = spatial_mean(x).view(x.shape[0], 1, -1)  # (B, 1, C)
        return torch.sigmoid(self.conv(pooled)).view(x.shape[0], -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.channel_weights(x)


class ChannelAttention(_ChannelMLP):
    """CBAM channel map ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``, shape ``(B, C, 1, 1)``.

    The MLP is shared: two 1x1 convs ``C -> C/r -> C`` with a ReLU between them.
    """

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        # Both descriptors go through the shared MLP in one call.
        pooled = torch.cat(spatial_mean_max(x))
        out = self.mlp(pooled)
        return torch.sigmoid(out[:batch] + out[batch:])


class SpatialAttention(nn.Module):
    """CBAM spatial map ``sigmoid(norm(conv7x7([max_c(x); mean_c(x)])))``, shape ``(B, 1, H, W)``.

    ``norm`` is the identity (the paper's formula, the default) or a module applied to the
    convolution's one-channel output, e.g. the authors' BatchNorm (:class:`CBAMSpatialBN`).
    """

    def __init__(self, kernel_size: int = 7, norm: nn.Module | None = None) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"spatial kernel_size must be a positive odd number, got {kernel_size}"
            )
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.Identity() if norm is None else norm

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.norm(self.conv(channel_max_mean(x))))


class CBAM(nn.Module):
    """Convolutional block attention: ``F' = M_c(F) * F``, then ``F'' = M_s(F') * F'``."""

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


class CBAMSpatialBN(CBAM):
    """CBAM as in its authors' code: the spatial gate is ``sigmoid(BN(conv7x7(...)))``.

    The authors' ``BasicConv(bn=True)``: the 7x7 convolution without bias, then
    ``BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)``; timm's CBAM also normalises
    there. The BN normalises the spatial logits over batch and positions in training (batch
    statistics; running statistics updated with ``bn_momentum``) and with its running
    statistics in eval mode. Parameters: CBAM's plus 2 (the BN's weight and bias).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        spatial_kernel: int = 7,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__(channels, reduction, spatial_kernel)
        norm = nn.BatchNorm2d(1, eps=bn_eps, momentum=bn_momentum, affine=True)
        self.spatial = SpatialAttention(spatial_kernel, norm)


def create_attention(name: str, channels: int, **kwargs: int) -> nn.Module:
    """Build the attention module called ``name`` for a ``channels``-channel feature map.

    Args:
        name: one of ``"none"``, ``"se"``, ``"eca"``, ``"cbam"`` (the paper's formula),
            ``"cbam_bn"`` (the CBAM authors' code: BatchNorm in the spatial gate).
        channels: number of input (= output) channels ``C``.
        kwargs: module options (``reduction`` for se/cbam/cbam_bn, ``spatial_kernel`` for
            cbam/cbam_bn, ``bn_eps``/``bn_momentum`` for cbam_bn, ``gamma``/``beta`` for eca).

    Returns:
        A module mapping ``(B, C, H, W)`` to ``(B, C, H, W)`` (``nn.Identity`` for ``"none"``).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names) or bad options.
    """
    builders = {
        "none": nn.Identity,
        "se": SqueezeExcite,
        "eca": EfficientChannelAttention,
        "cbam": CBAM,
        "cbam_bn": CBAMSpatialBN,
    }
    if name not in builders:
        raise ValueError(f"unknown attention {name!r}; valid names: {', '.join(ATTENTION_NAMES)}")
    if name == "none":
        if kwargs:
            raise ValueError(f"attention 'none' takes no options, got {sorted(kwargs)}")
        return nn.Identity()
    try:
        return builders[name](channels, **kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for attention {name!r}: {exc}") from exc
