"""Tests for reid_attn.models: attention modules, the attention ResNet50 and the re-id net.

Expected values are derived independently in the tests (closed-form parameter counts,
re-implementations of each attention with ``torch.nn.functional`` and the module's own
weights, and torchvision's ResNet50 as the reference backbone).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from conftest import load_experiment
from reid_attn.models import (
    ATTENTION_NAMES,
    BNNeckHead,
    ReIDNet,
    ResNet50,
    build_reid_net,
    create_attention,
)
from reid_attn.models.attention import (
    CBAM,
    CBAMSpatialBN,
    ChannelAttention,
    EfficientChannelAttention,
    SpatialAttention,
    SqueezeExcite,
    eca_kernel_size,
)
from reid_attn.models.pretrained import load_imagenet_weights
from reid_attn.models.resnet import AttentionBottleneck

# Output channels of the 16 ResNet50 bottlenecks, in forward order (layers of 3, 4, 6, 3).
BLOCK_OUT_CHANNELS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3

ATTN_TYPES = {
    "none": nn.Identity,
    "se": SqueezeExcite,
    "eca": EfficientChannelAttention,
    "cbam": CBAM,
    "cbam_bn": CBAMSpatialBN,
}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------- closed-form parameter counts


def se_params(channels: int, reduction: int = 16) -> int:
    # fc1: 1x1 conv C -> C//r with bias, fc2: 1x1 conv C//r -> C with bias.
    hidden = channels // reduction
    return channels * hidden + hidden + hidden * channels + channels


def cbam_params(channels: int, reduction: int = 16, kernel: int = 7) -> int:
    # Channel MLP (same as SE) + spatial conv 2 -> 1 with a k x k kernel and no bias.
    return se_params(channels, reduction) + 2 * kernel * kernel


def cbam_bn_params(channels: int, reduction: int = 16, kernel: int = 7) -> int:
    # CBAM + the spatial gate's BatchNorm2d(1): one weight and one bias (its running mean,
    # variance and batch count are buffers, not parameters).
    return cbam_params(channels, reduction, kernel) + 2


def eca_params(channels: int) -> int:
    # One Conv1d(1, 1, k) without bias.
    return eca_kernel_size(channels)


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def backbones() -> dict[str, ResNet50]:
    """One ResNet50 per attention name (last_stride=1), in eval mode; built once."""
    torch.manual_seed(0)
    models = {name: ResNet50(name).eval() for name in ATTENTION_NAMES}
    return models


@pytest.fixture(scope="module")
def tv_resnet50() -> nn.Module:
    torch.manual_seed(1)
    return torchvision.models.resnet50(weights=None).eval()


# ============================================================================ 1. output shapes


@pytest.mark.parametrize("name", ATTENTION_NAMES)
@pytest.mark.parametrize(("channels", "hw"), [(64, (5, 7)), (256, (4, 3)), (2048, (2, 1))])
def test_attention_preserves_shape(name: str, channels: int, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    module = create_attention(name, channels)
    assert isinstance(module, ATTN_TYPES[name])
    x = torch.randn(2, channels, *hw)
    y = module(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    if name != "none":
        # A real attention module changes the values (weights are strictly inside (0, 1)).
        assert not torch.allclose(y, x)
    else:
        assert torch.equal(y, x)


# ====================================================================== 2. parameter counts


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        # t = int(|(log2 C + 1) / 2|); odd t kept, even t -> t + 1.
        (64, 3),  # (6 + 1) / 2 = 3.5 -> 3
        (256, 5),  # (8 + 1) / 2 = 4.5 -> 4 -> 5
        (512, 5),  # (9 + 1) / 2 = 5
        (1024, 5),  # (10 + 1) / 2 = 5.5 -> 5
        (2048, 7),  # (11 + 1) / 2 = 6 -> 7
        (16, 3),  # (4 + 1) / 2 = 2.5 -> 2 -> 3
        (2, 1),  # (1 + 1) / 2 = 1
    ],
)
def test_eca_kernel_size_by_hand(channels: int, expected: int) -> None:
    assert eca_kernel_size(channels) == expected
    assert eca_kernel_size(channels) % 2 == 1


def test_eca_kernel_size_gamma_beta() -> None:
    # gamma=1, beta=0: t = log2 C. 64 -> 6 -> 7; 32 -> 5.
    assert eca_kernel_size(64, gamma=1, beta=0) == 7
    assert eca_kernel_size(32, gamma=1, beta=0) == 5
    # gamma=3, beta=1: (11 + 1) / 3 = 4 -> 5 for C=2048.
    assert eca_kernel_size(2048, gamma=3, beta=1) == 5
    module = create_attention("eca", 64, gamma=1, beta=0)
    assert module.conv.kernel_size == (7,)
    assert n_params(module) == 7


@pytest.mark.parametrize("channels", [64, 100, 256, 2048])
@pytest.mark.parametrize("reduction", [4, 16])
def test_se_and_cbam_param_counts(channels: int, reduction: int) -> None:
    se = create_attention("se", channels, reduction=reduction)
    cbam = create_attention("cbam", channels, reduction=reduction)
    assert n_params(se) == se_params(channels, reduction)
    assert n_params(cbam) == cbam_params(channels, reduction)


def test_param_count_hand_values() -> None:
    # C=64, r=16: hidden 4 -> 64*4 + 4 + 4*64 + 64 = 580; CBAM adds 2*7*7 = 98.
    assert n_params(create_attention("se", 64)) == 580
    assert n_params(create_attention("cbam", 64)) == 678
    # The authors' CBAM adds the spatial BN's weight and bias: 678 + 2.
    assert n_params(create_attention("cbam_bn", 64)) == 680
    # C=2048: hidden 128 -> 2*2048*128 + 128 + 2048 = 526464.
    assert n_params(create_attention("se", 2048)) == 526464
    # Spatial kernel 3 -> 2*3*3 = 18 conv weights.
    assert n_params(create_attention("cbam", 64, spatial_kernel=3)) == 580 + 18


@pytest.mark.parametrize("channels", [64, 256, 512, 1024, 2048])
def test_eca_and_none_param_counts(channels: int) -> None:
    eca = create_attention("eca", channels)
    assert n_params(eca) == eca_params(channels)
    assert eca.conv.bias is None
    assert n_params(create_attention("none", channels)) == 0


# ============================================================== 3. CBAM structure and parts


def test_cbam_ratio_factorises_into_channel_times_spatial() -> None:
    torch.manual_seed(0)
    C, H, W = 32, 5, 6
    cbam = CBAM(C, reduction=4).double()
    x = torch.rand(3, C, H, W, dtype=torch.float64) + 0.1  # strictly positive
    ratio = (cbam(x) / x).flatten(2)  # (B, C, P): should be a[c] * b[p] per sample
    # Rank-1 test over every (c1, c2, p1, p2): r[c1,p1] r[c2,p2] == r[c1,p2] r[c2,p1].
    lhs = ratio[:, :, None, :, None] * ratio[:, None, :, None, :]
    rhs = ratio[:, :, None, None, :] * ratio[:, None, :, :, None]
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=0.0)
    # Non-trivial: the ratio is neither constant across channels nor across positions.
    assert ratio.std(dim=1).min() > 1e-4
    assert ratio.std(dim=2).min() > 1e-4
    # Both maps are in (0, 1), so is their product.
    assert (ratio > 0).all() and (ratio < 1).all()


def test_cbam_order_is_channel_then_spatial() -> None:
    torch.manual_seed(0)
    cbam = CBAM(16, reduction=2).double()
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    channel_first = x * cbam.channel(x)
    expected = channel_first * cbam.spatial(channel_first)
    torch.testing.assert_close(cbam(x), expected, rtol=1e-12, atol=1e-12)

    spatial_first = x * cbam.spatial(x)
    wrong = spatial_first * cbam.channel(spatial_first)
    assert (cbam(x) - wrong).abs().max() > 1e-4


def test_channel_attention_matches_manual() -> None:
    torch.manual_seed(0)
    module = ChannelAttention(24, reduction=4).double()
    x = torch.randn(3, 24, 5, 4, dtype=torch.float64)

    def mlp(v: Tensor) -> Tensor:
        h = F.relu(F.conv2d(v, module.fc1.weight, module.fc1.bias))
        return F.conv2d(h, module.fc2.weight, module.fc2.bias)

    avg = F.adaptive_avg_pool2d(x, 1)
    mx = F.adaptive_max_pool2d(x, 1)
    expected = torch.sigmoid(mlp(avg) + mlp(mx))
    got = module(x)
    assert got.shape == (3, 24, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert (got > 0).all() and (got < 1).all()
    # The max branch matters: dropping it changes the map.
    assert (got - torch.sigmoid(2 * mlp(avg))).abs().max() > 1e-4


@pytest.mark.parametrize("kernel", [7, 3])
def test_spatial_attention_matches_manual(kernel: int) -> None:
    torch.manual_seed(0)
    module = SpatialAttention(kernel).double()
    x = torch.randn(2, 10, 9, 8, dtype=torch.float64)
    # Channel 0 of the conv input is the max over C, channel 1 the mean over C.
    pooled = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)
    expected = torch.sigmoid(F.conv2d(pooled, module.conv.weight, padding=kernel // 2))
    got = module(x)
    assert got.shape == (2, 1, 9, 8)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert (got > 0).all() and (got < 1).all()
    # Swapped [mean; max] order would give a different map.
    swapped = torch.stack([x.mean(dim=1), x.max(dim=1).values], dim=1)
    wrong = torch.sigmoid(F.conv2d(swapped, module.conv.weight, padding=kernel // 2))
    assert (got - wrong).abs().max() > 1e-4


# The textbook CBAM (mean / amax reductions) lives in the benchmark that times it (one copy).
reference_cbam = load_experiment("attention_variants").textbook


@pytest.mark.parametrize("channels_last", [False, True])
def test_cbam_values_and_gradients_match_textbook_reductions(channels_last: bool) -> None:
    torch.manual_seed(0)
    module = CBAM(32, reduction=4).double()
    x = torch.randn(3, 32, 6, 5, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref = x.detach().clone().requires_grad_()
    x = x.requires_grad_()
    grad_out = torch.randn(3, 32, 6, 5, dtype=torch.float64)
    got = module(x)
    got.backward(grad_out)
    got_param_grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    expected = reference_cbam(module, x_ref)
    expected.backward(grad_out)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    for got_grad, param in zip(got_param_grads, module.parameters(), strict=True):
        torch.testing.assert_close(got_grad, param.grad, rtol=1e-10, atol=1e-12)


def test_cbam_gradient_at_tied_maxima_goes_to_one_element() -> None:
    # Two equal maxima along the channels: max-pooling sends the gradient to one of them;
    # the total reaching the pair equals amax's (which shares it), so the step size is kept.
    module = SpatialAttention(1).double()
    x = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    x[0, :2] = 2.0
    x.requires_grad_()
    module(x).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    pooled = torch.cat([x_ref.amax(1, keepdim=True), x_ref.mean(1, keepdim=True)], dim=1)
    torch.sigmoid(module.conv(pooled)).sum().backward()
    grad, grad_ref = x.grad.flatten(), x_ref.grad.flatten()
    torch.testing.assert_close(grad[:2].sum(), grad_ref[:2].sum())
    torch.testing.assert_close(grad[2], grad_ref[2])
    assert (grad[:2] == grad_ref[2]).sum() == 1  # one of the tied pair got only the mean's part


def test_spatial_attention_rejects_even_kernel() -> None:
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(4)
    with pytest.raises(ValueError):
        create_attention("cbam", 64, spatial_kernel=6)


# ============================================= 3b. CBAM as in its authors' code (spatial BN)


def _authors_cbam_by_hand(module: CBAMSpatialBN, x: Tensor) -> tuple[Tensor, Tensor]:
    """The channel-gated map ``y`` and the spatial logits before the BN, written out with
    the textbook reductions and the module's weights."""
    channel = module.channel

    def mlp(v: Tensor) -> Tensor:
        hidden = F.relu(F.conv2d(v, channel.fc1.weight, channel.fc1.bias))
        return F.conv2d(hidden, channel.fc2.weight, channel.fc2.bias)

    y = x * torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    pooled = torch.cat([y.amax(1, keepdim=True), y.mean(1, keepdim=True)], dim=1)
    conv = module.spatial.conv
    return y, F.conv2d(pooled, conv.weight, padding=conv.kernel_size[0] // 2)


def _gate(module: CBAMSpatialBN, y: Tensor, logits: Tensor, mean, var) -> Tensor:
    """``y * sigmoid(BN(logits))`` for the BN statistics ``mean`` and ``var``."""
    bn = module.spatial.norm
    normed = (logits - mean) / (var + 1e-5) ** 0.5 * bn.weight + bn.bias
    return y * torch.sigmoid(normed)


def _authors_cbam(channels: int = 16) -> CBAMSpatialBN:
    torch.manual_seed(0)
    module = CBAMSpatialBN(channels, reduction=4).double()
    with torch.no_grad():  # a non-trivial affine part
        module.spatial.norm.weight.fill_(1.7)
        module.spatial.norm.bias.fill_(-0.4)
    return module


def test_cbam_bn_structure() -> None:
    module = create_attention("cbam_bn", 64)
    bn = module.spatial.norm
    assert type(bn) is nn.BatchNorm2d and bn.num_features == 1 and bn.affine
    assert (bn.eps, bn.momentum) == (1e-5, 0.01)
    assert module.spatial.conv.bias is None and module.spatial.conv.kernel_size == (7, 7)
    # The paper's formula has no norm: an identity in the same place, no extra tensors.
    assert type(create_attention("cbam", 64).spatial.norm) is nn.Identity
    assert sorted(k for k in module.state_dict() if k.startswith("spatial.norm.")) == [
        "spatial.norm.bias",
        "spatial.norm.num_batches_tracked",
        "spatial.norm.running_mean",
        "spatial.norm.running_var",
        "spatial.norm.weight",
    ]
    options = create_attention("cbam_bn", 64, bn_momentum=0.1, bn_eps=1e-3).spatial.norm
    assert (options.eps, options.momentum) == (1e-3, 0.1)


def test_cbam_bn_train_mode_uses_batch_statistics_and_updates_running_ones() -> None:
    module = _authors_cbam().train()
    bn = module.spatial.norm
    running_mean, running_var = 0.0, 1.0  # BatchNorm's initial running statistics
    for step in range(2):
        x = torch.randn(3, 16, 7, 5, dtype=torch.float64) * (1 + step)
        y, logits = _authors_cbam_by_hand(module, x)
        # Batch statistics over batch and positions of the one channel: biased variance
        # to normalise, unbiased variance into the running estimate.
        mean, var = logits.mean(), logits.var(unbiased=False)
        torch.testing.assert_close(module(x), _gate(module, y, logits, mean, var))
        running_mean = 0.99 * running_mean + 0.01 * mean.item()
        running_var = 0.99 * running_var + 0.01 * logits.var(unbiased=True).item()
        torch.testing.assert_close(bn.running_mean.item(), running_mean, rtol=1e-12, atol=0)
        torch.testing.assert_close(bn.running_var.item(), running_var, rtol=1e-12, atol=0)
        assert bn.num_batches_tracked.item() == step + 1


def test_cbam_bn_eval_mode_uses_running_statistics() -> None:
    module = _authors_cbam().eval()
    bn = module.spatial.norm
    with torch.no_grad():
        bn.running_mean.fill_(0.3)
        bn.running_var.fill_(2.5)
    x = torch.randn(3, 16, 7, 5, dtype=torch.float64)
    y, logits = _authors_cbam_by_hand(module, x)
    got = module(x)
    torch.testing.assert_close(got, _gate(module, y, logits, 0.3, 2.5))
    assert (bn.running_mean.item(), bn.running_var.item()) == (0.3, 2.5)  # not updated
    assert bn.num_batches_tracked.item() == 0
    # The same batch in train mode is normalised by its own statistics instead.
    assert (module.train()(x) - got).abs().max() > 1e-3


def test_cbam_bn_with_neutral_statistics_is_the_papers_cbam() -> None:
    # Running mean 0, variance 1 - eps, weight 1, bias 0: the BN is the identity in eval
    # mode, so the authors' CBAM equals the paper's with the same conv and MLP weights.
    authors = _authors_cbam().eval()
    bn = authors.spatial.norm
    with torch.no_grad():
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_var.fill_(1.0 - 1e-5)
    paper = CBAM(16, reduction=4).double().eval()
    paper.load_state_dict(
        {k: v for k, v in authors.state_dict().items() if not k.startswith("spatial.norm.")}
    )
    x = torch.randn(2, 16, 6, 4, dtype=torch.float64)
    torch.testing.assert_close(authors(x), paper(x), rtol=1e-12, atol=1e-12)


# ============================================================================ 4. SE and ECA


def test_se_matches_manual() -> None:
    torch.manual_seed(0)
    module = SqueezeExcite(32, reduction=8).double()
    x = torch.randn(2, 32, 4, 6, dtype=torch.float64)
    mean = x.mean(dim=(2, 3), keepdim=True)
    h = F.relu(F.conv2d(mean, module.fc1.weight, module.fc1.bias))
    weights = torch.sigmoid(F.conv2d(h, module.fc2.weight, module.fc2.bias))  # (B, C, 1, 1)
    assert weights.shape == (2, 32, 1, 1)
    torch.testing.assert_close(module.channel_weights(x), weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(module(x), x * weights, rtol=1e-12, atol=1e-12)
    got = module.channel_weights(x)
    assert (got > 0).all() and (got < 1).all()


@pytest.mark.parametrize("channels", [64, 2048])
def test_eca_matches_manual(channels: int) -> None:
    torch.manual_seed(0)
    module = EfficientChannelAttention(channels).double()
    k = eca_kernel_size(channels)
    x = torch.randn(3, channels, 3, 2, dtype=torch.float64)
    y = x.mean(dim=(2, 3))  # (B, C)
    w = module.conv.weight.view(k)
    # Zero-padded cross-correlation over the channel axis: z[c] = sum_j w[j] y[c + j - k//2].
    y_pad = F.pad(y, (k // 2, k // 2))
    z = sum(w[j] * y_pad[:, j : j + channels] for j in range(k))
    weights = torch.sigmoid(z).view(3, channels, 1, 1)
    torch.testing.assert_close(module.channel_weights(x), weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(module(x), x * weights, rtol=1e-12, atol=1e-12)


def test_eca_is_local_across_channels() -> None:
    # Perturbing channel c only changes the weights of channels within k//2 of c.
    torch.manual_seed(0)
    module = EfficientChannelAttention(64).double()  # k = 3
    x = torch.randn(1, 64, 2, 2, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 30] += 5.0
    changed = (module.channel_weights(x) - module.channel_weights(x2)).abs().view(64) > 1e-12
    assert changed.nonzero().flatten().tolist() == [29, 30, 31]


# ============================================================================ 5. ResNet50


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_resnet50_has_16_bottlenecks_with_attention(
    backbones: dict[str, ResNet50], name: str
) -> None:
    model = backbones[name]
    blocks = [m for m in model.modules() if isinstance(m, AttentionBottleneck)]
    assert len(blocks) == 16
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert model.bottlenecks() == blocks
    assert [b.bn3.num_features for b in blocks] == BLOCK_OUT_CHANNELS
    for block in blocks:
        assert type(block.attn) is ATTN_TYPES[name]
    if name in ("se", "cbam", "cbam_bn"):
        fc1 = [b.attn.fc1 if name == "se" else b.attn.channel.fc1 for b in blocks]
        assert [c.in_channels for c in fc1] == BLOCK_OUT_CHANNELS


def test_resnet50_none_param_count_equals_torchvision(
    backbones: dict[str, ResNet50], tv_resnet50: nn.Module
) -> None:
    # torchvision ResNet50 = 25,557,032 params, of which fc = 2048*1000 + 1000.
    expected = n_params(tv_resnet50) - (2048 * 1000 + 1000)
    assert expected == 25_557_032 - 2_049_000
    assert n_params(backbones["none"]) == expected


@pytest.mark.parametrize(
    ("name", "per_block", "hand_total"),
    [
        # SE: 3*8464 + 4*33312 + 6*132160 + 3*526464
        ("se", se_params, 2_530_992),
        # CBAM: SE total + 16 * 98
        ("cbam", cbam_params, 2_532_560),
        # CBAM with the authors' spatial BN: CBAM total + 16 * 2
        ("cbam_bn", cbam_bn_params, 2_532_592),
        # ECA: 3*5 + 4*5 + 6*5 + 3*7
        ("eca", eca_params, 86),
    ],
)
def test_resnet50_extra_params_match_formula(
    backbones: dict[str, ResNet50], name: str, per_block, hand_total: int
) -> None:
    base = n_params(backbones["none"])
    extra = n_params(backbones[name]) - base
    assert sum(per_block(c) for c in BLOCK_OUT_CHANNELS) == hand_total
    assert extra == hand_total
    # All extra parameters live in the attention modules.
    named = backbones[name].named_parameters()
    assert sum(p.numel() for n, p in named if ".attn." in n) == hand_total


def test_resnet50_attention_kwargs_are_forwarded() -> None:
    torch.manual_seed(0)
    model = ResNet50("se", {"reduction": 4}, last_stride=2)
    extra = n_params(model) - (25_557_032 - 2_049_000)
    assert extra == sum(se_params(c, 4) for c in BLOCK_OUT_CHANNELS)


# ======================================================== 6. attention placement in the block


def _recorder(rec: dict[str, Tensor], key: str):
    """Forward hook storing a copy of the module's first input and its output in ``rec``."""

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        rec[key + "_in"] = inputs[0].detach().clone()
        rec[key + "_out"] = output.detach().clone()

    return hook


@pytest.mark.parametrize("name", ATTENTION_NAMES)
def test_attention_after_bn3_before_residual_add(backbones: dict[str, ResNet50], name: str) -> None:
    # Each of the 16 bottlenecks is run on its own on a small random input of the right
    # width; hooks record bn3's output and attn's input/output.
    torch.manual_seed(0)
    blocks = backbones[name].bottlenecks()
    for block in blocks:
        rec: dict[str, Tensor] = {}
        handles = [
            block.bn3.register_forward_hook(_recorder(rec, "bn3")),
            block.attn.register_forward_hook(_recorder(rec, "attn")),
        ]
        x = torch.randn(2, block.conv1.in_channels, 6, 4)
        try:
            with torch.no_grad():
                out = block(x.clone())
        finally:
            for h in handles:
                h.remove()
        with torch.no_grad():
            # attn receives exactly bn3's output ...
            assert torch.equal(rec["attn_in"], rec["bn3_out"])
            # ... and is the attention of it (not applied e.g. after the add).
            torch.testing.assert_close(block.attn(rec["bn3_out"]), rec["attn_out"])
            identity = x if block.downsample is None else block.downsample(x)
            expected = F.relu(rec["attn_out"] + identity)
        assert out.shape == identity.shape
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        if name != "none":
            # Attention really changes bn3's output, so the order is observable.
            assert (rec["attn_out"] - rec["bn3_out"]).abs().max() > 1e-4
    # Blocks 0 of layers 1-4 have a projection shortcut, the others add their input.
    has_ds = [b.downsample is not None for b in blocks]
    assert [i for i, d in enumerate(has_ds) if d] == [0, 3, 7, 13]


# ================================================================ 7. torchvision weights load


@pytest.fixture(scope="module")
def tv_state_path(tmp_path_factory: pytest.TempPathFactory, tv_resnet50: nn.Module):
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(tv_resnet50.state_dict(), path)
    return path


def test_torchvision_weights_load_into_cbam(backbones: dict[str, ResNet50], tv_state_path):
    sd = torch.load(tv_state_path, weights_only=True)
    model = copy.deepcopy(backbones["cbam"])
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys, "attention parameters should be missing"
    assert all(".attn." in k for k in result.missing_keys)
    # Every attention parameter is missing (and nothing else): 16 blocks x 5 tensors
    # (fc1.weight, fc1.bias, fc2.weight, fc2.bias, spatial conv weight).
    attn_keys = {k for k in model.state_dict() if ".attn." in k}
    assert set(result.missing_keys) == attn_keys
    assert len(attn_keys) == 16 * 5
    assert sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])
    assert torch.equal(model.layer4[2].bn3.running_var, sd["layer4.2.bn3.running_var"])
    assert torch.equal(model.layer3[0].downsample[0].weight, sd["layer3.0.downsample.0.weight"])


def test_imagenet_weights_load_into_cbam_bn(backbones: dict[str, ResNet50], tv_state_path):
    model = copy.deepcopy(backbones["cbam_bn"])
    report = load_imagenet_weights(model, tv_state_path)
    # Missing: exactly the attention tensors, 16 blocks x 9 (CBAM's 5, the spatial BN's
    # weight, bias, running mean and variance); BatchNorm fills in its own batch count when
    # a state dict lacks it (as old checkpoints do), so that one is never reported.
    attn_keys = {k for k in model.state_dict() if ".attn." in k}
    counts = {k for k in attn_keys if k.endswith("num_batches_tracked")}
    assert len(counts) == 16
    assert set(report["missing"]) == attn_keys - counts and len(report["missing"]) == 16 * 9
    assert sorted(report["unexpected"]) == ["fc.bias", "fc.weight"]
    sd = torch.load(tv_state_path, weights_only=True)
    assert torch.equal(model.layer2[1].bn3.weight, sd["layer2.1.bn3.weight"])


@pytest.fixture(scope="module")
def none_stride2() -> ResNet50:
    torch.manual_seed(2)
    return ResNet50("none", last_stride=2).eval()


def test_torchvision_weights_load_into_none(
    tv_state_path, tv_resnet50: nn.Module, none_stride2: ResNet50
) -> None:
    sd = torch.load(tv_state_path, weights_only=True)
    model = copy.deepcopy(none_stride2)
    result = model.load_state_dict(sd, strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])
    # With identical weights and last_stride=2 the trunk is torchvision's ResNet50 trunk.
    x = torch.randn(2, 3, 32, 32)
    tv = tv_resnet50
    with torch.no_grad():
        ref = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(ref))))
        got = model(x)
    assert got.shape == ref.shape == (2, 2048, 1, 1)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


# ============================================================================ 8. last stride


def test_last_stride_feature_map_sizes(
    backbones: dict[str, ResNet50], none_stride2: ResNet50
) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 128, 64)
    model2 = none_stride2
    with torch.no_grad():
        # Total stride 16 with last_stride=1: 128/16 = 8, 64/16 = 4.
        assert backbones["none"](x).shape == (2, 2048, 8, 4)
        # Total stride 32 with last_stride=2: 128/32 = 4, 64/32 = 2.
        assert model2(x).shape == (2, 2048, 4, 2)
    assert backbones["none"].layer4[0].conv2.stride == (1, 1)
    assert model2.layer4[0].conv2.stride == (2, 2)
    assert ResNet50.out_channels == 2048


@pytest.mark.parametrize("bad", [0, 3])
def test_last_stride_invalid(bad: int) -> None:
    with pytest.raises(ValueError, match="last_stride"):
        ResNet50("none", last_stride=bad)


# =========================================================================== 9. head / ReIDNet


@pytest.fixture(scope="module")
def reid_runs() -> dict[str, dict]:
    """For each classifier: the eval-mode net, its input, forward(images) output (no targets),
    the backbone feature map seen during that forward (hook), and embed(images)."""
    torch.manual_seed(0)
    nets = {
        "circle": build_reid_net(7, attention="se", classifier="circle").eval(),
        "linear": build_reid_net(7, attention="eca", classifier="linear").eval(),
    }
    runs = {}
    for classifier, net in nets.items():
        images = torch.randn(3, 3, 64, 32)
        seen: dict[str, Tensor] = {}
        handle = net.backbone.register_forward_hook(
            lambda m, i, o, seen=seen: seen.__setitem__("fmap", o.detach().clone())
        )
        with torch.no_grad():
            out = net(images)
            handle.remove()
            emb = net.embed(images)
        runs[classifier] = {"net": net, "out": out, "fmap": seen["fmap"], "embed": emb}
    return runs


@pytest.mark.parametrize("classifier", ["circle", "linear"])
def test_reid_net_outputs(reid_runs: dict[str, dict], classifier: str) -> None:
    torch.manual_seed(0)
    run = reid_runs[classifier]
    net, out, fmap = run["net"], run["out"], run["fmap"]
    assert isinstance(net, ReIDNet)
    assert net.head.bnneck.bias.requires_grad is False
    assert net.head.bnneck.weight.requires_grad is True
    assert set(out) == {"global", "embedding", "logits", "scores"}
    # Without targets the loss logits are the plain class scores.
    torch.testing.assert_close(out["logits"], out["scores"])
    assert fmap.shape == (3, 2048, 4, 2)  # last_stride=1 default: 64/16, 32/16
    assert out["global"].shape == (3, 2048)
    assert out["embedding"].shape == (3, 2048)
    assert out["logits"].shape == (3, 7)
    # embed() is exactly the forward embedding in eval mode.
    torch.testing.assert_close(run["embed"], out["embedding"], rtol=0, atol=0)
    # global = spatial mean of the backbone map; embedding = eval-mode BN of it.
    torch.testing.assert_close(out["global"], fmap.mean(dim=(2, 3)))
    bn = net.head.bnneck
    expected_emb = (out["global"] - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
    expected_emb = expected_emb * bn.weight + bn.bias
    torch.testing.assert_close(out["embedding"], expected_emb)
    # With targets the logits keep their shape (B, num_classes).
    targets = torch.tensor([0, 6, 2])
    with torch.no_grad():
        with_targets = net.head(fmap, targets)
    assert with_targets["logits"].shape == (3, 7)
    torch.testing.assert_close(with_targets["embedding"], out["embedding"])
    torch.testing.assert_close(with_targets["scores"], out["scores"])
    if classifier == "circle":  # the margins re-weight the loss logits, not the scores
        assert not torch.allclose(with_targets["logits"], with_targets["scores"])


def test_circle_logits_without_targets_are_scaled_cosine(reid_runs: dict[str, dict]) -> None:
    run = reid_runs["circle"]
    out, weight = run["out"], run["net"].head.classifier.weight
    assert weight.shape == (7, 2048)
    cos = F.normalize(out["embedding"], dim=1) @ F.normalize(weight, dim=1).t()
    torch.testing.assert_close(out["logits"], 64.0 * cos, rtol=1e-4, atol=1e-4)
    assert out["logits"].abs().max() <= 64.0 + 1e-3


def test_linear_logits_are_embedding_times_weight(reid_runs: dict[str, dict]) -> None:
    run = reid_runs["linear"]
    out, classifier = run["out"], run["net"].head.classifier
    assert isinstance(classifier, nn.Linear)
    assert classifier.bias is None
    assert classifier.weight.shape == (7, 2048)
    torch.testing.assert_close(out["logits"], out["embedding"] @ classifier.weight.t())


def test_bnneck_head_small() -> None:
    torch.manual_seed(0)
    head = BNNeckHead(16, 5, classifier="circle", scale=30.0, margin=0.25)
    assert head.bnneck.bias.requires_grad is False
    fmap = torch.randn(4, 16, 3, 2)
    targets = torch.tensor([0, 1, 4, 4])

    # Train mode: embedding = batch-normalised pooled feature (biased variance), weight 1.
    out = head(fmap, targets)
    pooled = fmap.mean(dim=(2, 3))
    var = pooled.var(dim=0, unbiased=False)
    expected = (pooled - pooled.mean(dim=0)) / torch.sqrt(var + head.bnneck.eps)
    torch.testing.assert_close(out["global"], pooled)
    torch.testing.assert_close(out["embedding"], expected, rtol=1e-4, atol=1e-5)

    # The frozen bias gets no gradient and is not changed by an optimiser step.
    out["logits"].sum().backward()
    assert head.bnneck.bias.grad is None
    assert head.bnneck.weight.grad is not None
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    opt.step()
    assert torch.equal(head.bnneck.bias, torch.zeros(16))

    head.eval()
    with torch.no_grad():
        out = head(fmap)
        cos = F.normalize(out["embedding"], dim=1) @ F.normalize(head.classifier.weight, dim=1).t()
        torch.testing.assert_close(out["logits"], 30.0 * cos, rtol=1e-5, atol=1e-5)
        # With targets the circle re-weighting changes the logits.
        with_t = head(fmap, targets)["logits"]
    assert (with_t - out["logits"]).abs().max() > 1e-3


def test_unknown_classifier_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        BNNeckHead(16, 5, classifier="arcface")
    msg = str(info.value)
    assert "arcface" in msg and "linear" in msg and "circle" in msg


def test_build_reid_net_unknown_classifier() -> None:
    with pytest.raises(ValueError, match="linear"):
        build_reid_net(5, attention="none", classifier="cosface")


# ======================================================================= 10. create_attention


def test_create_attention_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        create_attention("foo", 64)
    msg = str(info.value)
    assert "foo" in msg
    for name in ("none", "se", "eca", "cbam", "cbam_bn"):
        assert name in msg
    assert set(ATTENTION_NAMES) == {"none", "se", "eca", "cbam", "cbam_bn"}


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("none", {"reduction": 16}),
        ("se", {"bogus": 1}),
        ("cbam", {"bogus": 1}),
        ("eca", {"reduction": 4}),  # ECA has no reduction option
        ("se", {"reduction": 0}),
        ("cbam", {"reduction": -1}),
        ("cbam", {"bn_momentum": 0.1}),  # the paper's CBAM has no BN
        ("cbam_bn", {"bogus": 1}),
        ("cbam_bn", {"spatial_kernel": 4}),
    ],
)
def test_create_attention_bad_kwargs(name: str, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        create_attention(name, 64, **kwargs)


def test_resnet50_unknown_attention() -> None:
    with pytest.raises(ValueError, match="cbam"):
        ResNet50("bam")


def test_small_channel_count_keeps_one_hidden_unit() -> None:
    # C // r == 0 would give an empty MLP; hidden is clamped to 1: 8*1 + 1 + 1*8 + 8 = 25.
    se = create_attention("se", 8)
    assert se.fc1.out_channels == 1
    assert n_params(se) == 25
    assert se(torch.ones(1, 8, 2, 2)).shape == (1, 8, 2, 2)


def test_checkpoint_attention_type_tells_the_two_cbams_apart(
    backbones: dict[str, ResNet50],
) -> None:
    from reid_attn.inference import weights_attention

    for name in ATTENTION_NAMES:
        assert weights_attention(backbones[name].state_dict()) == name
