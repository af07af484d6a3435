"""Forward + backward time of CBAM written in different ways, on the 16 feature maps a
ResNet50 bottleneck stack gives CBAM at one input size (3 x layer1, 4 x layer2, 6 x layer3,
3 x layer4 with last stride 1), summed over the stack; SE and the bare product ``x * w``
(the floor of any channel attention) for scale.

    .venv/bin/python experiments/attention_variants.py --batch 8            # CPU
    python3 experiments/attention_variants.py --device cuda --batch 64      # GPU

Variants: ``textbook`` (mean / amax reductions, autograd's backward), ``library`` (the
module in reid_attn.models.attention), ``pool_function`` (both descriptors of a map from one
custom autograd function whose backward is one fused ``where``), ``compiled``
(torch.compile of ``textbook``; with --compile). Timed per layout (contiguous,
channels_last) and precision (fp32, bf16 autocast).
"""

from __future__ import annotations

import argparse
import time

import torch
from harness import parse_size
from torch import Tensor

from reid_attn.models.attention import CBAM, SqueezeExcite


class MaxMean(torch.autograd.Function):
    """Maximum and mean over ``dims``; backward sends the maximum's gradient to every maximal
    element and the mean's everywhere, in one ``where``."""

    @staticmethod
    def forward(ctx, x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        maximum = x.amax(dims, keepdim=True)
        count = 1
        for d in dims:
            count *= x.shape[d]
        ctx.save_for_backward(x, maximum)
        ctx.count = count
        return maximum, x.sum(dims, keepdim=True) / count

    @staticmethod
    def backward(ctx, grad_max: Tensor, grad_mean: Tensor):
        x, maximum = ctx.saved_tensors
        grad_mean = grad_mean / ctx.count
        return torch.where(x == maximum, grad_max + grad_mean, grad_mean), None


def textbook(module: CBAM, x: Tensor) -> Tensor:
    """CBAM written with the textbook reductions (mean / amax) and autograd's backward; the
    tests' reference for the module's values and gradients."""
    channel = module.channel

    def mlp(v: Tensor) -> Tensor:
        return channel.fc2(channel.act(channel.fc1(v)))

    weights = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    y = x * weights
    pooled = torch.cat([y.amax(1, keepdim=True), y.mean(1, keepdim=True)], dim=1)
    return y * torch.sigmoid(module.spatial.conv(pooled))


def pool_function(module: CBAM, x: Tensor) -> Tensor:
    channel = module.channel
    batch = x.shape[0]
    maximum, mean = MaxMean.apply(x, (2, 3))
    out = channel.fc2(channel.act(channel.fc1(torch.cat([mean, maximum]))))
    y = x * torch.sigmoid(out[:batch] + out[batch:])
    return y * torch.sigmoid(module.spatial.conv(torch.cat(MaxMean.apply(y, (1,)), dim=1)))


def stack_shapes(batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    h, w = height // 4, width // 4
    return (
        [(batch, 256, h, w)] * 3
        + [(batch, 512, h // 2, w // 2)] * 4
        + [(batch, 1024, h // 4, w // 4)] * 6
        + [(batch, 2048, h // 4, w // 4)] * 3
    )


def time_stack(forward, modules, inputs, dtype, iters: int, device: torch.device) -> float:
    """Mean seconds of forward + backward over the whole stack."""

    def once() -> None:
        for module, x in zip(modules, inputs, strict=True):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                out = forward(module, x)
            out.backward(torch.ones_like(out))

    for _ in range(2):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="256x128")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    height, width = parse_size(args.size)
    shapes = stack_shapes(args.batch, height, width)
    torch.manual_seed(0)
    cbams = [CBAM(s[1]).to(device) for s in shapes]
    ses = [SqueezeExcite(s[1]).to(device) for s in shapes]
    variants = {
        "product x*w": (lambda m, x: x * m.fc1.bias.new_ones(1, x.shape[1], 1, 1), ses),
        "se": (lambda m, x: m(x), ses),
        "cbam textbook": (textbook, cbams),
        "cbam library": (lambda m, x: m(x), cbams),
        "cbam pool_function": (pool_function, cbams),
    }
    if args.compile:
        torch._dynamo.config.cache_size_limit = 64  # one graph per shape, layout and dtype
        variants["cbam compiled"] = (torch.compile(textbook, dynamic=False), cbams)
    print(f"{args.size}, batch {args.batch}, {device}: ms per stack of 16 (forward + backward)")
    for layout in (torch.contiguous_format, torch.channels_last):
        inputs = [
            torch.randn(s, device=device).contiguous(memory_format=layout).requires_grad_()
            for s in shapes
        ]
        for dtype in (None, torch.bfloat16):
            name = f"{'channels_last' if layout == torch.channels_last else 'contiguous'}" + (
                " bf16" if dtype else " fp32"
            )
            cells = []
            for label, (forward, modules) in variants.items():
                seconds = time_stack(forward, modules, inputs, dtype, args.iters, device)
                cells.append(f"{label} {1000 * seconds:.1f}")
            print(f"{name:<20} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
