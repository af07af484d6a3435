"""Attention maps captured with forward hooks, heat-map overlays and channel-weight plots.

Hooks are attached only while an :class:`AttentionRecorder` is open and removed on exit, so
the model's forward pass (the one used in training) is never changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torch import Tensor, nn

from reid_attn.models.attention import CBAM, EfficientChannelAttention, SqueezeExcite
from reid_attn.viz.grid import draw_centered, load_font

STAGES = (1, 2, 3, 4)
#: A map whose values span less than this counts as constant when normalised.
FLAT_SPAN = 1e-6


def attention_kind(module: nn.Module) -> str:
    """``"cbam"``, ``"se"``, ``"eca"`` or ``"none"``: the attention type of a bottleneck's
    ``attn`` module."""
    for kind, cls in (("cbam", CBAM), ("se", SqueezeExcite), ("eca", EfficientChannelAttention)):
        if isinstance(module, cls):
            return kind
    return "none"


class AttentionRecorder:
    """Record attention of one bottleneck per stage while the network runs.

    ``with AttentionRecorder(backbone, stages=[1, 2, 3, 4]) as rec: net.embed(images)`` fills

    * ``rec.spatial[stage]``: CBAM spatial maps ``(B, 1, h, w)`` in (0, 1) (the output of
      ``layer<stage>[block].attn.spatial``), CBAM only;
    * ``rec.channel[stage]``: channel weights ``(B, C)`` in (0, 1) (SE / ECA
      ``channel_weights`` of the module input, CBAM's channel attention).

    Repeated forward passes append along the batch axis. Tensors are detached, float32, CPU.

    Args:
        backbone: a :class:`reid_attn.models.resnet.ResNet50` (``layer1`` .. ``layer4``).
        stages: stage numbers in 1..4.
        block: bottleneck index inside each stage (Python indexing, -1 = last).
        spatial: record CBAM spatial maps (a ValueError for other attention types).
        channel: record channel weights (a ValueError for ``none``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        stages: Sequence[int] = STAGES,
        block: int = -1,
        spatial: bool = True,
        channel: bool = True,
    ) -> None:
        if not stages:
            raise ValueError("attention stages must name at least one of 1, 2, 3, 4")
        self.modules: dict[int, nn.Module] = {}
        for stage in stages:
            if stage not in STAGES:
                raise ValueError(
                    f"attention stage {stage!r} is not valid; valid stages: 1, 2, 3, 4"
                )
            layer = getattr(backbone, f"layer{stage}")
            if not -len(layer) <= block < len(layer):
                raise ValueError(
                    f"block {block} does not exist in layer{stage}, which has {len(layer)} "
                    f"bottlenecks (valid: {-len(layer)}..{len(layer) - 1})"
                )
            self.modules[int(stage)] = layer[block].attn
        kind = attention_kind(next(iter(self.modules.values())))
        if spatial and kind != "cbam":
            raise ValueError(
                f"spatial attention maps need a CBAM model; this one has attention {kind!r} "
                "(only channel weights can be shown for se and eca)"
            )
        if channel and kind == "none":
            raise ValueError("this model has no attention modules (attention 'none')")
        self.kind = kind
        self.record_spatial, self.record_channel = spatial, channel
        self.spatial: dict[int, Tensor] = {}
        self.channel: dict[int, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @staticmethod
    def _append(store: dict[int, Tensor], stage: int, value: Tensor) -> None:
        value = value.detach().float().cpu()
        store[stage] = torch.cat([store[stage], value]) if stage in store else value

    def _channel_hook(self, stage: int):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            with torch.no_grad():
                if isinstance(module, CBAM):
                    weights = module.channel(inputs[0])
                else:
                    weights = module.channel_weights(inputs[0])
            self._append(self.channel, stage, weights.flatten(1))

        return hook

    def _spatial_hook(self, stage: int):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            self._append(self.spatial, stage, output)

        return hook

    def __enter__(self) -> AttentionRecorder:
        for stage, attn in self.modules.items():
            if self.record_spatial:
                handle = attn.spatial.register_forward_hook(self._spatial_hook(stage))
                self._handles.append(handle)
            if self.record_channel:
                self._handles.append(attn.register_forward_hook(self._channel_hook(stage)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def upsample_maps(maps: Tensor, size: tuple[int, int], normalize: bool = True) -> Tensor:
    """Bilinearly resize attention maps ``(B, 1, h, w)`` to ``(B, 1, H, W)`` = ``size``.

    With ``normalize`` each map is min-max scaled to [0, 1] (a constant map, span below
    ``FLAT_SPAN``, becomes 0);
    otherwise values are kept (sigmoid outputs stay in (0, 1): bilinear weights are convex).
    """
    if maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"attention maps must have shape (B, 1, h, w), got {tuple(maps.shape)}")
    out = F.interpolate(maps.float(), size=tuple(size), mode="bilinear", align_corners=False)
    if normalize:
        low = out.amin(dim=(2, 3), keepdim=True)
        span = out.amax(dim=(2, 3), keepdim=True) - low
        flat = span <= FLAT_SPAN  # constant up to interpolation round-off
        out = torch.where(flat, torch.zeros_like(out), (out - low) / span.clamp_min(FLAT_SPAN))
    return out


def overlay_heatmap(
    image: np.ndarray | Image.Image,
    heat: np.ndarray | Tensor,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> np.ndarray:
    """Blend a colour-mapped heat map onto an image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB array or PIL image.
        heat: ``(H, W)`` values in [0, 1].
        alpha: weight of the heat map (0 = image only, 1 = heat map only).
        colormap: a Matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` uint8: ``round((1 - alpha) * image + alpha * 255 * colormap(heat)[..., :3])``.
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    heat_arr = heat.detach().cpu().numpy() if isinstance(heat, Tensor) else np.asarray(heat)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {rgb.shape}")
    if heat_arr.shape != rgb.shape[:2]:
        raise ValueError(f"heat map shape {heat_arr.shape} differs from image size {rgb.shape[:2]}")
    if heat_arr.size and (heat_arr.min() < 0 or heat_arr.max() > 1):
        raise ValueError("heat map values must lie in [0, 1] (see upsample_maps(normalize=True))")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if colormap not in matplotlib.colormaps:
        raise ValueError(f"unknown colormap {colormap!r} (any Matplotlib name, e.g. jet, viridis)")
    colors = matplotlib.colormaps[colormap](heat_arr.astype(np.float64))[..., :3] * 255.0
    blended = (1.0 - alpha) * rgb.astype(np.float64) + alpha * colors
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def compose_panels(
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[str],
    padding: int = 4,
    title_height: int = 16,
    font_size: int = 11,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Tile equally sized ``(H, W, 3)`` uint8 panels into one image with column titles.

    Size: width ``n * W + (n + 1) * padding``, height ``title_height + r * H + (r + 1) * padding``
    for ``r`` rows of ``n`` panels.
    """
    if not rows or not rows[0]:
        raise ValueError("compose_panels needs at least one row with one panel")
    height, width = rows[0][0].shape[:2]
    cols = len(rows[0])
    if len(titles) != cols or any(len(row) != cols for row in rows):
        raise ValueError("every row needs one panel per title")
    canvas = Image.new(
        "RGB",
        (
            cols * width + (cols + 1) * padding,
            title_height + len(rows) * height + (len(rows) + 1) * padding,
        ),
        background,
    )
    draw = ImageDraw.Draw(canvas)
    font = load_font(font_size)
    for c, title in enumerate(titles):
        x = padding + c * (width + padding)
        draw_centered(draw, font, title, x + width / 2, 2, (0, 0, 0))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            if panel.shape[:2] != (height, width):
                raise ValueError(
                    f"panel ({r}, {c}) has size {panel.shape[:2]}, not {(height, width)}"
                )
            x = padding + c * (width + padding)
            y = title_height + padding + r * (height + padding)
            canvas.paste(Image.fromarray(panel), (x, y))
    return canvas


def channel_weight_figure(
    weights: dict[int, Tensor], title: str = "", figsize: Sequence[float] = (10.0, 2.8)
) -> Figure:
    """One panel per stage: the mean channel weight over images ``(N, C)`` per channel, sorted
    in descending order, with a band of +- one standard deviation across images."""
    if not weights:
        raise ValueError("no channel weights to plot")
    fig = Figure(figsize=tuple(figsize), layout="constrained")
    axes = fig.subplots(1, len(weights), squeeze=False)[0]
    for ax, (stage, w) in zip(axes, sorted(weights.items()), strict=True):
        w = w.double()
        mean = w.mean(0)
        std = w.std(0) if w.shape[0] > 1 else torch.zeros_like(mean)
        order = torch.argsort(mean, descending=True)
        x = np.arange(1, mean.numel() + 1)
        ax.plot(x, mean[order].numpy(), lw=1.2)
        ax.fill_between(
            x, (mean - std)[order].numpy(), (mean + std)[order].numpy(), alpha=0.25, lw=0
        )
        ax.set_ylim(0, 1)
        ax.set_title(f"layer{stage}: {mean.numel()} ch, mean {mean.mean():.3f}", fontsize=9)
        ax.set_xlabel("channel (sorted by mean weight)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("channel weight", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
